"""Small, model-free building blocks of the EchoMimicV2 sampler.

* :mod:`.scheduler` - the DDIM configuration the official pipelines use, and presets.
* :mod:`.context`   - the closed-loop "uniform" context-window schedule with the per-step shift.
* :mod:`.latents`   - seeded initial noise exactly as the official pipeline draws it.
* :mod:`.guidance`  - window accumulation and classifier-free guidance.

Names are exported lazily (PEP 562), like :mod:`echomimic_core.models`: the settings checks import
``.context`` and ``.scheduler`` without paying for torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "shifted_windows": "context", "uniform_windows": "context", "window_schedule": "context",
    "WindowAccumulator": "guidance", "apply_guidance": "guidance", "uses_cfg": "guidance",
    "initial_latents": "latents",
    "OFFICIAL_SCHEDULER_KWARGS": "scheduler", "PRESETS": "scheduler", "Preset": "scheduler",
    "get_preset": "scheduler", "make_scheduler": "scheduler",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
