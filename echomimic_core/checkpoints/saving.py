"""Writing a model set in the official EchoMimicV2 layout (the inverse of :func:`load_models`).

Used by the trainer's export and by ``convert``; every file goes through
:func:`~echomimic_core.checkpoints.state_dict.save_state_dict` (atomic, mode 0644, optional read-back
verification).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch

from ..errors import ConfigError
from ..models import split_motion_state_dict
from .layout import VARIANTS
from .state_dict import atomic_write, save_state_dict

__all__ = ["save_models", "save_inference_config", "INFERENCE_CONFIG_NAME"]

INFERENCE_CONFIG_NAME = "inference_config.json"
#: keys never cast by ``dtype=`` (the deterministic motion-module position tables stay float32)
KEEP_DTYPE = ("pos_encoder.pe",)

Weights = Union[torch.nn.Module, Mapping[str, torch.Tensor]]


def _tensors(weights: Weights) -> Mapping[str, torch.Tensor]:
    return weights.state_dict() if isinstance(weights, torch.nn.Module) else weights


def save_models(out_dir: Union[str, os.PathLike], *, reference_unet: Optional[Weights] = None,
                denoising_unet: Optional[Weights] = None, pose_encoder: Optional[Weights] = None,
                variant: str = "normal", suffixes: Sequence[str] = (".pth",), dtype: Optional[torch.dtype] = None,
                verify: bool = False) -> Dict[str, List[Path]]:
    """Write the given networks (modules or state dicts) as the official files of ``variant``.

    The denoiser's state dict is split like the official release: keys containing ``"motion_modules."``
    go to ``motion_module{_acc}``, the rest to ``denoising_unet{_acc}``. Each file is written once per
    entry of ``suffixes`` (``.pth`` and/or ``.safetensors``); ``dtype`` casts floating tensors except the
    position tables. Returns ``{stem: [paths]}``.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {sorted(VARIANTS)}, not {variant!r}")
    bad = [s for s in suffixes if s not in (".pth", ".safetensors")]
    if bad or not suffixes:
        raise ConfigError(f"suffixes must be '.pth' and/or '.safetensors', not {list(suffixes)}")
    den_stem, mm_stem = VARIANTS[variant]
    parts: Dict[str, Mapping[str, torch.Tensor]] = {}
    if reference_unet is not None:
        parts["reference_unet"] = _tensors(reference_unet)
    if denoising_unet is not None:
        motion, spatial = split_motion_state_dict(_tensors(denoising_unet))
        parts[den_stem], parts[mm_stem] = spatial, motion
    if pose_encoder is not None:
        parts["pose_encoder"] = _tensors(pose_encoder)
    out = Path(out_dir)
    written: Dict[str, List[Path]] = {}
    for stem, sd in parts.items():
        written[stem] = [save_state_dict(sd, out / f"{stem}{suffix}", dtype=dtype, keep_dtype=KEEP_DTYPE,
                                         verify=verify) for suffix in suffixes]
    return written


def save_inference_config(out_dir: Union[str, os.PathLike], unet_additional_kwargs: Mapping[str, Any],
                          noise_scheduler_kwargs: Mapping[str, Any]) -> Path:
    """Write ``inference_config.json`` (read back by :func:`load_inference_config`), atomically."""
    text = json.dumps({"unet_additional_kwargs": dict(unet_additional_kwargs),
                       "noise_scheduler_kwargs": dict(noise_scheduler_kwargs)}, indent=1)
    return atomic_write(Path(out_dir) / INFERENCE_CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))
