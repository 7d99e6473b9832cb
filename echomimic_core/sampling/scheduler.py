"""DDIM as configured by the official ``configs/inference/inference_v2.yaml``, and the two presets.

The official sampler is diffusers' ``DDIMScheduler`` with linear betas 0.00085..0.012, zero-terminal-SNR
rescaling, v-prediction and "trailing" timestep spacing, eta 0. We use the diffusers class itself (not a
re-implementation) so that parity holds by construction; this module only pins the configuration and
validates anything a checkpoint folder supplies in its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InputError
from ..models.configs import OFFICIAL_NOISE_SCHEDULER_KWARGS

#: ``noise_scheduler_kwargs`` of the official inference config (one definition, next to the model configs).
OFFICIAL_SCHEDULER_KWARGS: dict[str, Any] = OFFICIAL_NOISE_SCHEDULER_KWARGS

# keys of a saved diffusers scheduler config that are bookkeeping, not constructor arguments
_META_KEYS = ("_class_name", "_diffusers_version", "_use_default_values")


def make_scheduler(kwargs: Mapping[str, Any] | None = None):
    """A fresh ``diffusers.DDIMScheduler``.

    ``kwargs`` are the ``noise_scheduler_kwargs`` of a model folder's inference config (or a full saved
    scheduler config); missing keys fall back to the official values. A fresh object is returned on every
    call because ``set_timesteps`` mutates the scheduler, and runs must not share state.
    """
    from diffusers import DDIMScheduler

    config = dict(OFFICIAL_SCHEDULER_KWARGS)
    for key, value in dict(kwargs or {}).items():
        if key not in _META_KEYS:
            config[key] = value
    if config.get("prediction_type") not in ("v_prediction", "epsilon", "sample"):
        raise InputError(f"unsupported scheduler prediction_type {config.get('prediction_type')!r}")
    return DDIMScheduler(**config)


@dataclass(frozen=True)
class Preset:
    """Sampler defaults that belong to one set of denoiser weights."""

    name: str
    variant: str          # which weights: "normal" (denoising_unet.pth) or "acc" (denoising_unet_acc.pth)
    steps: int
    guidance_scale: float
    seed: int


PRESETS: dict[str, Preset] = {
    "normal": Preset("normal", "normal", steps=30, guidance_scale=2.5, seed=3407),
    "acc": Preset("acc", "acc", steps=6, guidance_scale=1.0, seed=420),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
