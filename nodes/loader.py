"""Model loader node: finds model folders under models/echomimic_v2 (and models/echo_mimic), loads
them with ``echomimic_core.checkpoints.load_models`` and caches them between runs."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from echomimic_core.files import walk_folder

from . import _comfy

VARIANTS = ["normal", "acc"]
DTYPES = ["auto", "fp32", "fp16", "bf16"]
DEVICES = ["auto", "cpu"]
OFFLOAD = ["keep_loaded", "offload_after_run"]
# a folder is offered in the list when it holds one of these (official layout / the older pack's v2/)
_MARKERS = ("reference_unet.pth", "reference_unet.safetensors", os.path.join("v2", "reference_unet.pth"))
_MAX_DEPTH = 2


@dataclass
class EchoMimicModelsHandle:
    """What travels on an ECHOMIMIC_MODELS socket: the loaded models plus where/how they run."""

    models: Any
    folder: str
    variant: str
    device: torch.device
    dtype: torch.dtype
    offload: bool = False
    audio_encoder: Any = None
    pipeline: Any = None  # echomimic_core.pipeline.EchoMimicPipeline over these models, built on first use
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    def __repr__(self) -> str:  # shown by ComfyUI in some debug paths; keep it short
        return f"EchoMimicModels({self.folder!r}, variant={self.variant}, {self.device}, {self.dtype})"

    def to_compute(self) -> None:
        """Put the weights on the compute device (they may wait on the offload device between runs)."""
        _move(self.models, self.device)

    def after_run(self) -> None:
        """Move the weights to ComfyUI's offload device when offloading is on."""
        if self.offload:
            _move(self.models, _comfy.offload_device())
            _comfy.soft_empty_cache()

    def get_audio_encoder(self):
        """The whisper encoder of this model folder (audio_processor/tiny.pt), loaded once, float32."""
        with self._lock:
            if self.audio_encoder is None:
                from echomimic_core.audio import load_audio_encoder

                path = getattr(self.models, "audio_encoder_path", None) or os.path.join(self.folder, "audio_processor")
                self.audio_encoder = load_audio_encoder(path, dtype=torch.float32, device=self.device)
            return self.audio_encoder


def _move(models: Any, device: torch.device) -> None:
    if hasattr(models, "to"):
        models.to(device)
        return
    for value in vars(models).values():
        if isinstance(value, torch.nn.Module):
            value.to(device)


EMBEDDED_DEMO = "(embedded demo)"
"""Combo entry for the tiny demo model shipped inside the package (echomimic_core/assets/demo_model:
trained on synthetic talking figures at 64x64, runs on CPU in seconds; see train/make_demo_model.sh)."""


def embedded_demo_folder() -> str:
    import echomimic_core

    return os.path.join(os.path.dirname(os.path.abspath(echomimic_core.__file__)), "assets", "demo_model")


def list_model_folders() -> list[str]:
    """Combo entries: "<folder name>" for a registered dir holding weights, "<folder name>/<sub>"
    for model sub-folders. Always offers "echomimic_v2" so an empty install still shows a clear
    "files missing" error when run, and (last) the embedded demo model when it is installed."""
    found: list[str] = []
    for name, root in _comfy.model_search_roots():
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, _ in walk_folder(root, _MAX_DEPTH):
            rel = os.path.relpath(dirpath, root)
            if any(os.path.isfile(os.path.join(dirpath, m)) for m in _MARKERS):
                label = name if rel == "." else f"{name}/{rel.replace(os.sep, '/')}"
                if label not in found:
                    found.append(label)
    if _comfy.MODEL_FOLDER not in found:
        found.insert(0, _comfy.MODEL_FOLDER)
    if os.path.isdir(embedded_demo_folder()):
        found.append(EMBEDDED_DEMO)
    return found


def resolve_model_folder(label: str) -> str:
    """Combo entry (or an absolute path) -> the folder on disk."""
    if label == EMBEDDED_DEMO:
        return embedded_demo_folder()
    if os.path.isabs(label):
        return label
    name, _, rel = label.partition("/")
    roots = [root for n, root in _comfy.model_search_roots() if n == name]
    for root in roots:
        path = os.path.normpath(os.path.join(root, rel)) if rel else root
        if not os.path.commonpath([path, root]) == root:
            raise ValueError(f"model folder {label!r} is outside the models folder")
        if os.path.isdir(path):
            return path
    tried = [os.path.join(r, rel) if rel else r for r in roots] or [label]
    from echomimic_core.errors import ModelFilesNotFoundError

    raise ModelFilesNotFoundError(
        f"EchoMimicV2 model folder {label!r} not found (looked in: {', '.join(tried)}). Put the official "
        "pretrained_weights/ files into ComfyUI/models/echomimic_v2/ (reference_unet.pth, denoising_unet.pth, "
        "motion_module.pth, pose_encoder.pth, sd-image-variations-diffusers/unet/, sd-vae-ft-mse/, "
        "audio_processor/tiny.pt; denoising_unet_acc.pth + motion_module_acc.pth for the acc variant).")


def _signature(folder: str) -> tuple:
    """Cheap fingerprint of the weight files, so replaced files are reloaded."""
    sig = []
    for dirpath, _, filenames in walk_folder(folder):  # link cycles are entered once, depth capped
        for fn in filenames:
            if fn.endswith((".pth", ".pt", ".bin", ".safetensors", ".json")):
                try:
                    st = os.stat(os.path.join(dirpath, fn))
                except OSError:
                    continue
                sig.append((os.path.relpath(os.path.join(dirpath, fn), folder), st.st_size, st.st_mtime_ns))
    return tuple(sig)


# One loaded model set is kept between runs (a second one would double the memory of a real model).
_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def load_cached(folder: str, variant: str, dtype: torch.dtype, device: torch.device,
                offload: bool) -> EchoMimicModelsHandle:
    from echomimic_core.checkpoints import load_models

    key = (os.path.realpath(folder), variant, str(dtype), str(device), _signature(folder))
    with _CACHE_LOCK:
        handle = _CACHE.get(key)
        if handle is None:
            _CACHE.clear()
            # with offloading the weights wait on the offload device (CPU) until a run needs them
            models = load_models(folder, variant=variant, dtype=dtype,
                                 device=_comfy.offload_device() if offload else device)
            handle = EchoMimicModelsHandle(models, folder, variant, device, dtype, offload)
            _CACHE[key] = handle
        handle.offload = offload
        return handle


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


class EchoMimicV2ModelLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_folder": (list_model_folders(), {
                    "tooltip": "A folder under ComfyUI/models/echomimic_v2 (or models/echo_mimic) in the official "
                               "pretrained_weights layout. '(embedded demo)': the tiny demo model shipped with "
                               "the pack (synthetic talking figures, 64x64, CPU)."}),
                "variant": (VARIANTS, {"default": "normal",
                                       "tooltip": "normal: denoising_unet.pth + motion_module.pth (30 steps, cfg 2.5). "
                                                  "acc: the *_acc.pth weights (about 6 steps, cfg 1)."}),
                "dtype": (DTYPES, {"default": "auto",
                                   "tooltip": "auto: fp16 on a GPU that supports it, fp32 on CPU."}),
                "device": (DEVICES, {"default": "auto", "tooltip": "auto: ComfyUI's compute device."}),
                "offload": (OFFLOAD, {"default": "keep_loaded",
                                      "tooltip": "offload_after_run moves the weights to ComfyUI's offload device "
                                                 "(CPU) after every run to free VRAM; they come back for the next."}),
            },
        }

    RETURN_TYPES = (_comfy.MODELS,)
    RETURN_NAMES = ("models",)
    FUNCTION = "load"
    CATEGORY = _comfy.CATEGORY
    DESCRIPTION = "Loads the EchoMimicV2 networks (reference/denoising UNets, motion module, pose encoder, VAE)."

    def load(self, model_folder, variant, dtype, device, offload):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        folder = resolve_model_folder(model_folder)
        dev = _comfy.compute_device(device)
        torch_dtype = _comfy.resolve_dtype(dtype, dev)
        handle = load_cached(folder, variant, torch_dtype, dev, offload == "offload_after_run")
        return (handle,)


NODE_CLASS_MAPPINGS = {"EchoMimicV2ModelLoader": EchoMimicV2ModelLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"EchoMimicV2ModelLoader": "EchoMimicV2 Model Loader"}
