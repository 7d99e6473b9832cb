"""Small, model-free building blocks of the EchoMimicV2 sampler.

* :mod:`.scheduler` - the DDIM configuration the official pipelines use, and presets.
* :mod:`.context`   - the closed-loop "uniform" context-window schedule with the per-step shift.
* :mod:`.latents`   - seeded initial noise exactly as the official pipeline draws it.
* :mod:`.guidance`  - window accumulation and classifier-free guidance.
"""

from .context import shifted_windows, uniform_windows, window_schedule
from .guidance import WindowAccumulator, apply_guidance, uses_cfg
from .latents import initial_latents
from .scheduler import OFFICIAL_SCHEDULER_KWARGS, PRESETS, Preset, get_preset, make_scheduler

__all__ = [
    "OFFICIAL_SCHEDULER_KWARGS", "PRESETS", "Preset", "WindowAccumulator", "apply_guidance", "get_preset",
    "initial_latents", "make_scheduler", "shifted_windows", "uniform_windows", "uses_cfg", "window_schedule",
]
