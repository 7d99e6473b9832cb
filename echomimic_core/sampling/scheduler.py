"""The samplers: DDIM as configured by the official ``configs/inference/inference_v2.yaml`` (the default), a
small registry of other diffusers schedulers built from the same config, and the two presets.

The official sampler is diffusers' ``DDIMScheduler`` with linear betas 0.00085..0.012, zero-terminal-SNR
rescaling, v-prediction and "trailing" timestep spacing, eta 0. We use the diffusers class itself (not a
re-implementation) so that parity holds by construction; this module only pins the configuration and
validates anything a checkpoint folder supplies in its place.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InputError
from ..models.configs import OFFICIAL_NOISE_SCHEDULER_KWARGS

#: ``noise_scheduler_kwargs`` of the official inference config (one definition, next to the model configs).
OFFICIAL_SCHEDULER_KWARGS: dict[str, Any] = OFFICIAL_NOISE_SCHEDULER_KWARGS

# keys of a saved diffusers scheduler config that are bookkeeping, not constructor arguments
_META_KEYS = ("_class_name", "_diffusers_version", "_use_default_values")


#: name -> (diffusers class name, extra constructor arguments, extra ``step`` arguments). Every entry is built
#: from the same noise-schedule config (linear betas, v-prediction, zero terminal SNR, trailing spacing), so
#: they all sample the model the weights were trained for; "ddim" is the official sampler.
SCHEDULERS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}, {"eta": 0.0}),
    "euler": ("EulerDiscreteScheduler", {}, {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, {}),
    "unipc": ("UniPCMultistepScheduler", {}, {}),
    "lcm": ("LCMScheduler", {}, {}),
}


def check_scheduler_name(name: str) -> str:
    key = str(name).lower()
    if key not in SCHEDULERS:
        raise InputError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    return key


def scheduler_config(kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The official noise-schedule config with a model folder's ``noise_scheduler_kwargs`` (or a full saved
    scheduler config) laid over it; validated."""
    config = dict(OFFICIAL_SCHEDULER_KWARGS)
    for key, value in dict(kwargs or {}).items():
        if key not in _META_KEYS:
            config[key] = value
    if config.get("prediction_type") not in ("v_prediction", "epsilon", "sample"):
        raise InputError(f"unsupported scheduler prediction_type {config.get('prediction_type')!r}")
    return config


def make_scheduler(kwargs: Mapping[str, Any] | None = None, name: str = "ddim"):
    """A fresh diffusers scheduler of the registered kind ``name`` (default: the official DDIM).

    ``kwargs`` are the ``noise_scheduler_kwargs`` of a model folder's inference config; missing keys fall back
    to the official values. A fresh object is returned on every call because ``set_timesteps`` and the
    multistep schedulers' ``step`` mutate it, and runs must not share state.
    """
    import diffusers

    class_name, extra, _ = SCHEDULERS[check_scheduler_name(name)]
    cls = getattr(diffusers, class_name)
    config = scheduler_config(kwargs)
    if class_name != "DDIMScheduler":  # DDIM-only options; the others take their own
        config = {k: v for k, v in config.items() if k not in ("clip_sample", "set_alpha_to_one")}
    config.update(extra)
    if class_name == "DDIMScheduler":  # the official class: every key must be one of its arguments
        return cls(**config)
    accepted = set(inspect.signature(cls.__init__).parameters)
    return cls(**{k: v for k, v in config.items() if k in accepted})


def step_kwargs(name: str, generator=None) -> dict[str, Any]:
    """Extra arguments of ``scheduler.step`` for the registered kind (DDIM: eta 0; LCM: its noise generator)."""
    key = check_scheduler_name(name)
    kwargs = dict(SCHEDULERS[key][2])
    if key == "lcm" and generator is not None:
        kwargs["generator"] = generator
    return kwargs


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
