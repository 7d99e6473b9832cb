"""Model loader node: finds model folders under models/echomimic_v2 (and models/echo_mimic), loads
them with ``echomimic_core.checkpoints.load_models`` onto ComfyUI's offload device and hands them to
ComfyUI's memory manager in model patchers.

There is no cache of our own: ComfyUI's node cache keeps the loader's output between runs (and drops
it on "Free model and node cache"), ``load_models_gpu`` moves the weights to the compute device before
each run and "Unload models" (or another model needing the memory) moves them back."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from comfy_api.latest import io

from echomimic_core.errors import InputError
from echomimic_core.files import walk_folder

from . import _comfy
from ._edge import node_edge

VARIANTS = ["normal", "acc"]
DTYPES = ["auto", "fp32", "fp16", "bf16"]
DEVICES = ["auto", "cpu"]
OFFLOAD = ["keep_loaded", "offload_after_run"]
# a folder is offered in the list when it holds one of these (official layout / the older pack's v2/)
_MARKERS = ("reference_unet.pth", "reference_unet.safetensors", os.path.join("v2", "reference_unet.pth"))
_MAX_DEPTH = 2
_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


@dataclass
class EchoMimicModelsHandle:
    """What travels on an ECHOMIMIC_MODELS socket: the loaded models, their model patchers and where/how
    they run. Dropping the handle (ComfyUI's "Free model and node cache") frees the weights."""

    models: Any
    folder: str
    variant: str
    device: torch.device
    dtype: torch.dtype
    offload: bool = False
    patcher: Any = None        # ModelPatcher over the four networks (ModuleDict)
    audio_encoder: Any = None
    audio_patcher: Any = None
    pipeline: Any = None  # echomimic_core.pipeline.EchoMimicPipeline over these models, built on first use
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    def __repr__(self) -> str:  # shown by ComfyUI in some debug paths; keep it short
        return f"EchoMimicModels({self.folder!r}, variant={self.variant}, {self.device}, {self.dtype})"

    def patchers(self) -> list:
        return [p for p in (self.patcher, self.audio_patcher) if p is not None]

    def to_compute(self, audio: bool = False) -> None:
        """Let ComfyUI load the weights onto the compute device (freeing other models if needed)."""
        wanted = [self.audio_patcher] if audio else [self.patcher]
        _comfy.load_models_gpu([p for p in wanted if p is not None])

    def after_run(self) -> None:
        """offload_after_run: hand the weights back to ComfyUI's offload device right away."""
        if self.offload:
            _comfy.unload_patchers(self.patchers())

    def get_audio_encoder(self):
        """The whisper encoder of this model folder (audio_processor/tiny.pt), loaded once per handle,
        float32, in a patcher of its own; on the compute device when this returns."""
        with self._lock:
            if self.audio_encoder is None:
                from echomimic_core.audio import load_audio_encoder

                path = getattr(self.models, "audio_encoder_path", None) or os.path.join(self.folder, "audio_processor")
                self.audio_encoder = load_audio_encoder(path, dtype=torch.float32, device=_comfy.offload_device())
                self.audio_patcher = _comfy.model_patcher({"audio_encoder": self.audio_encoder}, self.device,
                                                          _comfy.offload_device())
        self.to_compute(audio=True)
        return self.audio_encoder


def wrap_models(models: Any, folder: str, variant: str, device: torch.device, dtype: torch.dtype,
                offload: bool) -> EchoMimicModelsHandle:
    """Put the loaded networks under one model patcher (they always run together)."""
    patcher = _comfy.model_patcher(models.networks(), device, _comfy.offload_device())
    return EchoMimicModelsHandle(models, folder, variant, device, dtype, offload, patcher=patcher)


def pickle_weights(folder: str) -> list[str]:
    """Weight files of ``folder`` stored as torch pickles (loaded safely, but slower and not paged by a
    newer ComfyUI's dynamic VRAM, which reads safetensors only)."""
    found = []
    for dirpath, _, filenames in walk_folder(folder):
        for fn in filenames:
            if fn.endswith(_PICKLE_SUFFIXES) and fn != "tiny.pt":
                stem = os.path.splitext(fn)[0]
                if not os.path.isfile(os.path.join(dirpath, stem + ".safetensors")):
                    found.append(os.path.relpath(os.path.join(dirpath, fn), folder))
    return found


def conversion_hint(folder: str) -> str:
    """One line offering the .pth -> .safetensors conversion of a model folder."""
    folder = os.path.normpath(folder)
    return (f"Convert the .pth weights once with `python -m echomimic_core.convert {folder} "
            f"{folder}_safetensors` (every tensor verified) and use that folder instead: safetensors load "
            "faster, need no pickle, and a newer ComfyUI pages only safetensors weights (dynamic VRAM).")


EMBEDDED_DEMO = "(embedded demo)"
"""Combo entry for the tiny demo model shipped inside the package (echomimic_core/assets/demo_model:
trained on synthetic talking figures at 64x64; the demo workflow takes a few minutes on a CPU; see
train/make_demo_model.sh)."""


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
            raise InputError(f"model folder {label!r} is outside the models folder")
        if os.path.isdir(path):
            return path
    tried = [os.path.join(r, rel) if rel else r for r in roots] or [label]
    from echomimic_core.errors import ModelFilesNotFoundError

    raise ModelFilesNotFoundError(
        f"EchoMimicV2 model folder {label!r} not found (looked in: {', '.join(tried)}). Put the official "
        "pretrained_weights/ files into ComfyUI/models/echomimic_v2/ (reference_unet.pth, denoising_unet.pth, "
        "motion_module.pth, pose_encoder.pth, sd-image-variations-diffusers/unet/, sd-vae-ft-mse/, "
        "audio_processor/tiny.pt; denoising_unet_acc.pth + motion_module_acc.pth for the acc variant).")


def folder_signature(folder: str) -> tuple:
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


def check_choice(model_folder: str, variant: str) -> str | None:
    """The cheap checks before any file is read: an error line, or None."""
    if variant not in VARIANTS:
        return f"variant must be one of {VARIANTS}, got {variant!r}"
    if model_folder == EMBEDDED_DEMO and variant != "normal":
        return "the embedded demo model has no acc variant: choose variant 'normal' (or a folder with the *_acc.pth files)"
    return None


def load_handle(model_folder: str, variant: str, dtype: str, device: str, offload: str) -> EchoMimicModelsHandle:
    """Load one model set onto ComfyUI's offload device and wrap it in model patchers."""
    import logging

    from echomimic_core.checkpoints import load_models
    from echomimic_core.errors import CheckpointError

    problem = check_choice(model_folder, variant)
    if problem:
        raise InputError(f"EchoMimicV2 Model Loader: {problem}")
    folder = resolve_model_folder(model_folder)
    dev = _comfy.compute_device(device)
    torch_dtype = _comfy.resolve_dtype(dtype, dev)
    pickles = pickle_weights(folder) if model_folder != EMBEDDED_DEMO else []
    try:
        models = load_models(folder, variant=variant, dtype=torch_dtype, device=_comfy.offload_device())
    except CheckpointError as exc:
        if pickles and not isinstance(exc, FileNotFoundError):
            raise type(exc)(f"{exc}\n{conversion_hint(folder)}") from None
        raise
    if pickles:
        logging.info("EchoMimicV2: %s holds .pth weights (%s). %s", folder, ", ".join(pickles[:4]),
                     conversion_hint(folder))
    return wrap_models(models, folder, variant, dev, torch_dtype, offload == "offload_after_run")


class EchoMimicV2ModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2ModelLoader", "EchoMimicV2 Model Loader",
            "Loads the EchoMimicV2 networks (reference/denoising UNets, motion module, pose encoder, VAE) and "
            "hands them to ComfyUI's model management (Unload models / Free model and node cache free them).",
            inputs=[
                io.Combo.Input("model_folder", options=list_model_folders(), tooltip=(
                    "A folder under ComfyUI/models/echomimic_v2 (or models/echo_mimic) in the official "
                    "pretrained_weights layout (.safetensors preferred, .pth accepted). '(embedded demo)': the "
                    "tiny demo model shipped with the pack (synthetic talking figures, 64x64; a few minutes on "
                    "a CPU).")),
                io.Combo.Input("variant", options=VARIANTS, default="normal", tooltip=(
                    "normal: denoising_unet + motion_module (30 steps, cfg 2.5). acc: the *_acc weights "
                    "(about 6 steps, cfg 1). The embedded demo model has only 'normal'.")),
                _comfy.advanced(io.Combo.Input("dtype", options=DTYPES, default="auto",
                                               tooltip="auto: fp16 on a GPU that supports it, fp32 on CPU.")),
                _comfy.advanced(io.Combo.Input("device", options=DEVICES, default="auto",
                                               tooltip="auto: ComfyUI's compute device; cpu forces the CPU.")),
                _comfy.advanced(io.Combo.Input("offload", options=OFFLOAD, default="keep_loaded", tooltip=(
                    "keep_loaded: ComfyUI keeps the weights on the compute device until it needs the memory. "
                    "offload_after_run: move them to ComfyUI's offload device (CPU) after every run."))),
            ],
            outputs=[_comfy.Models.Output("models", display_name="models",
                                          tooltip="The loaded networks, for the audio encoder and the sampler.")],
        )

    @classmethod
    def validate_inputs(cls, model_folder, variant):
        problem = check_choice(model_folder, variant)
        return True if problem is None else problem

    @classmethod
    def fingerprint_inputs(cls, model_folder, variant, dtype, device, offload):
        # replaced or converted weight files are loaded again
        try:
            return folder_signature(resolve_model_folder(model_folder))
        except (OSError, ValueError):
            return float("nan")

    @classmethod
    @node_edge
    def execute(cls, model_folder, variant, dtype, device, offload) -> io.NodeOutput:
        return io.NodeOutput(load_handle(model_folder, variant, dtype, device, offload))


NODES = [EchoMimicV2ModelLoader]
NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _comfy.legacy_mappings(NODES)
