"""The pack's only contact points with ComfyUI: model folders, devices, progress and interrupt.

Every node module goes through these helpers instead of importing ComfyUI modules itself, so the glue
lives in one place and the unit tests can run the node functions against the vendored ComfyUI
without a server.
"""

from __future__ import annotations

import os

import folder_paths
import numpy as np
import torch

CATEGORY = "EchoMimicV2"

# Custom socket types: only for things ComfyUI has no core type for.
MODELS = "ECHOMIMIC_MODELS"
AUDIO_FEATURES = "ECHOMIMIC_AUDIO_FEATURES"
POSES = "ECHOMIMIC_POSES"

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


# --- progress and interrupt ----------------------------------------------------------------------

def throw_if_interrupted() -> None:
    """Raises ComfyUI's InterruptProcessingException when the user pressed cancel."""
    _mm().throw_exception_if_processing_interrupted()


class Progress:
    """A ComfyUI ProgressBar that a library progress callback can drive as ``progress(done, total)``."""

    def __init__(self, total: int = 1):
        import comfy.utils

        self._bar = comfy.utils.ProgressBar(max(int(total), 1))

    def __call__(self, done: int, total: int | None = None) -> None:
        self._bar.update_absolute(int(done), int(total) if total else None)


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
