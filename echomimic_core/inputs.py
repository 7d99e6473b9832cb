"""Reference-image and audio-feature inputs of a generation: accepted forms, normalisation, cheap checks.

Everything here runs before any heavy work, so bad input fails with one :class:`InputError` line.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import InputError

__all__ = ["load_reference_image", "fit_reference_image", "preprocess_reference", "normalize_audio_features"]


def _to_pil(image: Any):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if hasattr(image, "detach"):
        image = image.detach().cpu()
        if image.ndim == 4:
            if image.shape[0] != 1:
                raise InputError(f"reference image batch must hold one image (got {image.shape[0]})")
            image = image[0]
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
            image = image.permute(1, 2, 0)
        if image.dtype.is_floating_point:  # ComfyUI IMAGE convention: [0, 1]
            image = (image.float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        image = image.numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputError(f"reference image must be [H, W, 3] (got shape {tuple(array.shape)})")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            array = (np.clip(array, 0, 1) * 255.0).round().astype(np.uint8)
        else:
            raise InputError(f"reference image must be uint8 or float in [0, 1] (got {array.dtype})")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(array))


def load_reference_image(source: Any):
    """A PIL RGB image from a path, a PIL image, a uint8/float array or a tensor."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, str) or hasattr(source, "__fspath__"):
        try:
            with Image.open(source) as img:
                img.load()
                return img.convert("RGB")
        except FileNotFoundError:
            raise InputError(f"reference image not found: {source}") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(f"{source} is not a readable image: {exc}") from None
    return _to_pil(source).convert("RGB")


def fit_reference_image(image: Any, width: int, height: int) -> tuple[Any, list[str]]:
    """Centre-crop to the target aspect ratio (if it differs) and return the image plus warnings.

    Resizing to exactly (width, height) is left to :func:`preprocess_reference` (LANCZOS, as diffusers'
    VaeImageProcessor does in the official pipeline), so an image that already has the right size passes
    through bit-exactly.
    """
    img = load_reference_image(image)
    notes: list[str] = []
    w0, h0 = img.size
    if w0 * height != h0 * width:
        target = width / height
        if w0 / h0 > target:
            new_w = max(1, round(h0 * target))
            left = (w0 - new_w) // 2
            box = (left, 0, left + new_w, h0)
        else:
            new_h = max(1, round(w0 / target))
            top = (h0 - new_h) // 2
            box = (0, top, w0, top + new_h)
        img = img.crop(box)
        notes.append(f"reference image {w0}x{h0} has a different aspect ratio than {width}x{height}; "
                     f"centre-cropped to {img.size[0]}x{img.size[1]}")
    if img.size != (width, height):
        notes.append(f"reference image resized from {img.size[0]}x{img.size[1]} to {width}x{height}")
    return img, notes


def preprocess_reference(image: Any, width: int, height: int) -> torch.Tensor:
    """VaeImageProcessor(do_convert_rgb=True).preprocess equivalent: RGB, LANCZOS resize to (W, H) when the
    size differs, [0, 1] -> [-1, 1], ``[1, 3, H, W]`` float32."""
    from PIL import Image

    img = load_reference_image(image)
    if img.size != (width, height):
        img = img.resize((width, height), resample=Image.LANCZOS)
    array = np.asarray(img, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()
    return tensor * 2.0 - 1.0


def normalize_audio_features(features: Any) -> torch.Tensor:
    """Per-frame audio chunks as ``[num_chunks, tokens, channels]`` float tensor (CPU)."""
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor):
        raise InputError(f"audio features must be a tensor [frames, tokens, channels] (got {type(features).__name__})")
    if features.ndim == 4 and features.shape[0] == 1:
        features = features[0]
    if features.ndim != 3 or features.shape[0] < 1 or features.shape[1] < 1:
        raise InputError(f"audio features must be [frames, tokens, channels] (got shape {tuple(features.shape)})")
    if not features.dtype.is_floating_point:
        raise InputError(f"audio features must be floating point (got {features.dtype})")
    return features.detach()
