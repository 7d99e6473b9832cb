"""The pack's only contact points with ComfyUI: the V3 schema helpers, model folders, devices, the
memory manager, progress and interrupt.

Every node module goes through these helpers instead of importing ComfyUI modules itself, so the glue
lives in one place and the unit tests can run the node functions against the vendored ComfyUI
without a server. ComfyUI modules whose attributes a newer ComfyUI rebinds at start-up
(``comfy.model_patcher.CoreModelPatcher`` under dynamic VRAM) are looked up at call time, never
imported by name.
"""

from __future__ import annotations

import os
import time

import folder_paths
import numpy as np
import torch
from comfy_api.latest import io

CATEGORY = "EchoMimicV2"
NODE_PREFIX = "EchoMimicV2"

# Custom socket types: only for things ComfyUI has no core type for.
MODELS = "ECHOMIMIC_MODELS"
AUDIO_FEATURES = "ECHOMIMIC_AUDIO_FEATURES"
POSES = "ECHOMIMIC_POSES"
CONTEXT = "ECHOMIMIC_CONTEXT"
SAMPLER_PRESET = "ECHOMIMIC_SAMPLER_PRESET"
Models = io.Custom(MODELS)
AudioFeatures = io.Custom(AUDIO_FEATURES)
Poses = io.Custom(POSES)
Context = io.Custom(CONTEXT)
SamplerPreset = io.Custom(SAMPLER_PRESET)


# --- V3 schema helpers ---------------------------------------------------------------------------

def advanced(inp):
    """Mark a widget as rarely changed: newer frontends fold it behind the node's "Advanced" toggle.

    ComfyUI 0.3.64's input classes have no ``advanced`` argument yet; the flag travels in the input's
    extra dict, which both old and new versions serialise into /object_info unchanged."""
    inp.extra_dict["advanced"] = True
    return inp


def schema(node_id: str, display_name: str, description: str, inputs: list, outputs: list, **kwargs) -> io.Schema:
    """An io.Schema in the pack's category; every node id carries the pack prefix, and every node gets
    its unique id (for the progress bar) as a hidden input."""
    if not node_id.startswith(NODE_PREFIX):
        raise ValueError(f"node id {node_id!r} must start with {NODE_PREFIX!r}")
    hidden = list(kwargs.pop("hidden", [])) + [io.Hidden.unique_id]
    return io.Schema(node_id=node_id, display_name=display_name, category=CATEGORY, description=description,
                     inputs=inputs, outputs=outputs, hidden=hidden, **kwargs)


def legacy_mappings(node_classes) -> tuple[dict, dict]:
    """NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS built from V3 classes (for code that still
    reads them; ComfyUI itself registers the pack through comfy_entrypoint)."""
    classes, names = {}, {}
    for cls in node_classes:
        sch = cls.define_schema()
        classes[sch.node_id] = cls
        names[sch.node_id] = sch.display_name
    return classes, names


def node_id_of(cls) -> str | None:
    """The executing node's id (hidden input), or None outside a ComfyUI execution (unit tests)."""
    hidden = getattr(cls, "hidden", None)
    return getattr(hidden, "unique_id", None) if hidden is not None else None

# Model folders: ours (official pretrained_weights/ layout) and the older EchoMimic pack's.
MODEL_FOLDER = "echomimic_v2"
LEGACY_MODEL_FOLDER = "echo_mimic"
# Pose sequences are looked up under <input>/echomimic_poses/ (and the input dir itself).
POSE_INPUT_SUBDIR = "echomimic_poses"


def register_model_folders() -> None:
    """Register models/echomimic_v2 and models/echo_mimic with folder_paths (idempotent).

    The extension filter stays empty (= every file), because a model folder holds .pth, .pt,
    .safetensors and config.json files in sub-folders."""
    for name in (MODEL_FOLDER, LEGACY_MODEL_FOLDER):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))


def model_search_roots() -> list[tuple[str, str]]:
    """(folder name, absolute dir) for every registered model search dir, ours first."""
    roots = []
    for name in (MODEL_FOLDER, LEGACY_MODEL_FOLDER):
        try:
            dirs = folder_paths.get_folder_paths(name)
        except KeyError:
            dirs = []
        for d in dirs:
            roots.append((name, os.path.abspath(d)))
    return roots


def input_directory() -> str:
    return folder_paths.get_input_directory()


def output_directory() -> str:
    out = folder_paths.get_output_directory()
    os.makedirs(out, exist_ok=True)
    return out


def save_path(filename_prefix: str, width: int, height: int) -> tuple[str, str, int, str]:
    """(full output folder, file stem, counter, subfolder) exactly as the core save nodes pick them."""
    full_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
        filename_prefix, output_directory(), width, height
    )
    os.makedirs(full_folder, exist_ok=True)
    return full_folder, filename, counter, subfolder


# --- devices -------------------------------------------------------------------------------------

def _mm():
    import comfy.model_management as mm

    return mm


def compute_device(choice: str = "auto") -> torch.device:
    """"auto" = ComfyUI's compute device (cpu under --cpu); "cpu" forces the CPU."""
    if choice == "cpu":
        return torch.device("cpu")
    return _mm().get_torch_device()


def offload_device() -> torch.device:
    return _mm().unet_offload_device()


def intermediate_device() -> torch.device:
    return _mm().intermediate_device()


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice == "fp32":
        return torch.float32
    if choice == "fp16":
        return torch.float16
    if choice == "bf16":
        return torch.bfloat16
    # auto: half precision where ComfyUI would use it for a UNet, else float32 (CPU)
    if device.type != "cpu" and _mm().should_use_fp16(device):
        return torch.float16
    return torch.float32


def soft_empty_cache() -> None:
    _mm().soft_empty_cache()


# --- ComfyUI's memory manager --------------------------------------------------------------------

def model_patcher(networks: dict, load_device: torch.device, offload_device_: torch.device):
    """Wrap networks (name -> module) in ComfyUI's model patcher so "Unload models", "Free model and node
    cache" and other models' loads can move or drop them. They go into a plain ModuleDict because the
    patcher keeps its own ``device`` attribute on the module (diffusers models have a read-only one).
    ``CoreModelPatcher`` is what a newer ComfyUI rebinds to its dynamic-VRAM patcher at start-up, so it
    is read here, at call time; 0.3.64 has only ModelPatcher."""
    import comfy.model_patcher

    patcher_cls = getattr(comfy.model_patcher, "CoreModelPatcher", None) or comfy.model_patcher.ModelPatcher
    return patcher_cls(torch.nn.ModuleDict(networks), load_device=load_device, offload_device=offload_device_)


def load_models_gpu(patchers) -> None:
    """Ask ComfyUI to put these patchers' weights on their load device (freeing other models first when
    memory is short). Full load: the networks are plain torch modules (not built from comfy.ops), which
    ComfyUI cannot run partially loaded."""
    _mm().load_models_gpu(list(patchers), force_full_load=True)


def unload_patchers(patchers) -> None:
    """Move these patchers' weights back to their offload device now (the loader's offload_after_run)."""
    mm = _mm()
    wanted = {id(p) for p in patchers}
    for i in range(len(mm.current_loaded_models) - 1, -1, -1):
        loaded = mm.current_loaded_models[i]
        if id(loaded.model) in wanted:
            loaded.model_unload()
            mm.current_loaded_models.pop(i)
    mm.soft_empty_cache()


# --- progress and interrupt ----------------------------------------------------------------------

def throw_if_interrupted() -> None:
    """Raises ComfyUI's InterruptProcessingException when the user pressed cancel."""
    _mm().throw_exception_if_processing_interrupted()


def interrupt_exception_type() -> type:
    """The exception ComfyUI reports as "interrupted" rather than as an error."""
    return _mm().InterruptProcessingException


def oom_exception_type() -> type:
    """The exception on which ComfyUI unloads every model and shows its out-of-memory tip
    (torch.cuda.OutOfMemoryError; plain Exception where torch has none)."""
    return _mm().OOM_EXCEPTION


class Progress:
    """A ComfyUI ProgressBar for one node that a library progress callback can drive as
    ``progress(done, total)``; ``preview(frame)`` shows a frame on the node now and then."""

    PREVIEW_EVERY_S = 2.0

    def __init__(self, total: int = 1, node_id: str | None = None):
        import comfy.utils

        self._bar = comfy.utils.ProgressBar(max(int(total), 1), node_id=node_id)
        self._preview = None
        self._last_preview = 0.0

    def __call__(self, done: int, total: int | None = None) -> None:
        self._bar.update_absolute(int(done), int(total) if total else None, self._take_preview())

    def _take_preview(self):
        preview, self._preview = self._preview, None
        return preview

    def preview(self, frame_chw: torch.Tensor) -> None:
        """Queue one float [3, H, W] frame (0..1) for the node's preview, at most every few seconds;
        it goes out with the next progress update."""
        now = time.monotonic()
        if now - self._last_preview < self.PREVIEW_EVERY_S:
            return
        self._last_preview = now
        from PIL import Image

        rgb = (frame_chw.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        self._preview = ("JPEG", Image.fromarray(rgb), 512)
        self._bar.update_absolute(self._bar.current, None, self._take_preview())


# --- type conversion -----------------------------------------------------------------------------

def image_to_uint8(image: torch.Tensor, index: int = 0) -> np.ndarray:
    """IMAGE [B, H, W, C] float 0..1 -> one (H, W, 3) uint8 RGB array."""
    if image.ndim == 3:
        image = image[None]
    frame = image[min(index, image.shape[0] - 1), :, :, :3]
    return (frame.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def images_to_uint8(images: torch.Tensor) -> np.ndarray:
    """IMAGE [B, H, W, C] -> (B, H, W, 3) uint8 RGB."""
    if images.ndim == 3:
        images = images[None]
    return (images[..., :3].detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def uint8_to_image(frames) -> torch.Tensor:
    """(B, H, W, 3) or (H, W, 3) uint8 / float array -> IMAGE [B, H, W, 3] float32 0..1 on CPU."""
    t = torch.as_tensor(np.asarray(frames))
    if t.ndim == 3:
        t = t[None]
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    return t[..., :3].float().clamp(0, 1).to(intermediate_device())
