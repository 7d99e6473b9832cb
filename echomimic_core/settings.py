"""The settings of one generation, checked once, in one place.

:class:`GenerationSettings` is what the CLI (``generate``, ``demo``), the ComfyUI nodes and the benches build
and what :meth:`EchoMimicPipeline.generate` runs. :meth:`GenerationSettings.checked` validates every field
(sizes with sane upper bounds, fps, steps, a finite guidance scale, the seed range, context, decode chunk,
window batch, scheduler, preset, speed options) and fills the preset defaults; :func:`video_length` is the
video-length rule. Nothing here touches a model or a file.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .errors import InputError
from .sampling.context import check_context
from .sampling.scheduler import PRESETS, check_scheduler_name, get_preset

__all__ = ["GenerationSettings", "settings_from_kwargs", "FAST_OPTIONS", "FAST_SAMPLER", "check_size",
           "check_positive", "video_length", "MAX_SIZE", "MAX_STEPS", "MAX_FPS", "MAX_SEED"]

#: sane upper bounds (a typo such as 76800 fails at once instead of after minutes of allocation)
MAX_SIZE = 4096
MAX_STEPS = 1000
MAX_FPS = 240.0
MAX_GUIDANCE = 100.0
MAX_SEED = 2**64 - 1            # torch.Generator.manual_seed's range (ComfyUI's seed widget too)
MAX_CONTEXT = 256
MAX_DECODE_CHUNK = 1024
MAX_WINDOW_BATCH = 256
CONTEXT_SCHEDULES = ("uniform", "no_overlap")
#: ``--fast``: the fast options whose held-out demo quality stayed within 10% of the exact run (README "Speed",
#: bench/demo_quality.py: mouth r 0.706 -> 0.708, hand error 4.1% -> 4.1% of the width)
FAST_OPTIONS = {"context_schedule": "no_overlap", "deep_cache_interval": 2}
#: the "fast" sampler preset of the nodes adds fewer steps of a multistep sampler (with FAST_OPTIONS: mouth r
#: 0.712, hand error 4.3% of the width, 3.3x less time than 20 DDIM steps on the demo)
FAST_SAMPLER = {"scheduler": "dpm++2m", "steps": 10}


def check_size(width: Any, height: Any) -> tuple[int, int]:
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        raise InputError(f"width/height must be integers (got {width!r}, {height!r})") from None
    if w <= 0 or h <= 0 or w % 8 or h % 8:
        raise InputError(f"width and height must be positive multiples of 8 (got {w}x{h})")
    if w > MAX_SIZE or h > MAX_SIZE:
        raise InputError(f"width and height must be at most {MAX_SIZE} (got {w}x{h})")
    return w, h


def check_positive(name: str, value: Any, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive integer (got {value!r})") from None
    if number != value and not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be a whole number (got {value!r})")
    if number <= 0:
        raise InputError(f"{name} must be a positive integer (got {value})")
    if maximum is not None and number > maximum:
        raise InputError(f"{name} must be at most {maximum} (got {number})")
    return number


def video_length(requested: Optional[int], audio_chunks: int, pose_frames: Optional[int]) -> int:
    """The video-length rule: by default as long as both the audio (one chunk per frame) and the poses; a
    requested length is clipped to the audio chunk count (official behaviour); the poses must cover it."""
    if requested is None:
        n = audio_chunks if pose_frames is None else min(audio_chunks, pose_frames)
    else:
        n = min(check_positive("number of frames", requested), audio_chunks)
    if n < 1:
        raise InputError("the video would have no frames (empty audio features or poses)")
    if pose_frames is not None and pose_frames < n:
        raise InputError(f"the pose sequence has {pose_frames} frames but {n} are needed; "
                         "fit its length first (pose.fit_length)")
    return n


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that decides one generation apart from its inputs.

    ``None`` means "default": ``steps``/``guidance_scale``/``seed`` come from the preset (default: the weights'
    variant), ``decode_chunk_size``/``window_batch_size``/``pose_feature_cache_mb`` are chosen from the work
    size and the device's memory (see ``engine.auto_*``).

    Exact speed options (same prediction as the plain path within float rounding; on by default):
    ``window_batch_size`` (context windows per denoiser call), ``pose_feature_cache_mb`` (pose features encoded
    once per frame, up to this budget), ``cache_reference_kv`` (reference key/value projections once per layer),
    ``skip_uncond_audio`` (the zero-audio cross-attention of the CFG unconditional half is a constant),
    ``share_frame_heads`` (the per-frame part of the denoiser before its first motion module computed once per
    frame and step, not once per overlapping window).
    ``compile`` wraps the denoiser in ``torch.compile`` (off; falls back to eager on any compile error).

    Fast options (change the output; off by default, cost measured in the README): ``context_schedule
    "no_overlap"`` (windows without overlap), any ``scheduler`` with fewer ``steps``, ``guidance_fraction``
    (classifier-free guidance only on the first ``ceil(fraction * steps)`` steps, the later ones run the
    conditional branch alone: guidance matters least at low noise, Kynkäänniemi et al. 2024) and
    ``deep_cache_interval`` N > 1 (DeepCache, Ma et al. 2024: the full UNet every N steps, the steps between
    recompute only the outermost level and reuse the deep features of the last full step, averaged per frame;
    costs memory linear in the video length, see the README).
    """

    width: int = 768
    height: int = 768
    num_frames: Optional[int] = None
    steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    seed: Optional[int] = None
    preset: Optional[str] = None
    scheduler: str = "ddim"
    context_frames: int = 12
    context_overlap: int = 3
    context_schedule: str = "uniform"
    fps: float = 24.0
    decode_chunk_size: Optional[int] = None
    window_batch_size: Optional[int] = None
    pose_cache_mb: float = 64.0
    pose_feature_cache_mb: Optional[float] = None
    cache_reference_kv: bool = True
    skip_uncond_audio: bool = True
    share_frame_heads: bool = True
    compile: bool = False
    guidance_fraction: float = 1.0
    deep_cache_interval: int = 1

    def guided_steps(self) -> list[bool]:
        """Per step of a checked copy: whether it runs the unconditional branch (CFG)."""
        from .sampling.guidance import uses_cfg

        if self.guidance_scale is None or self.steps is None:
            raise InputError("guided_steps needs checked settings (call checked() first)")
        guided = math.ceil(float(self.guidance_fraction) * self.steps - 1e-9) if uses_cfg(self.guidance_scale) else 0
        return [i < guided for i in range(self.steps)]

    def replace(self, **changes) -> "GenerationSettings":
        return dataclasses.replace(self, **changes)

    def checked(self, variant: str = "normal", labels: Optional[dict] = None) -> "GenerationSettings":
        """A validated copy with the preset defaults filled in (``variant``: the loaded weights' variant,
        whose preset applies when ``preset`` is None). Raises :class:`InputError` naming the fix; ``labels``
        maps field names to what the caller calls them (the CLI: ``{"steps": "--steps", ...}``)."""
        names = {"steps": "steps", "guidance_scale": "guidance scale", "seed": "seed", "fps": "fps",
                 "num_frames": "number of frames", "context_frames": "context frames",
                 "context_overlap": "context overlap", "decode_chunk_size": "decode chunk size",
                 "window_batch_size": "window batch size", "guidance_fraction": "guidance fraction",
                 "deep_cache_interval": "deep cache interval",
                 **(labels or {})}
        width, height = check_size(self.width, self.height)
        preset = get_preset(self.preset) if self.preset is not None else PRESETS.get(variant, PRESETS["normal"])
        steps = check_positive(names["steps"], preset.steps if self.steps is None else self.steps, MAX_STEPS)
        try:
            cfg = float(preset.guidance_scale if self.guidance_scale is None else self.guidance_scale)
        except (TypeError, ValueError):
            raise InputError(f"{names['guidance_scale']} must be a number (got {self.guidance_scale!r})") from None
        if not math.isfinite(cfg) or not 0 <= cfg <= MAX_GUIDANCE:
            raise InputError(f"{names['guidance_scale']} must be a finite number in [0, {MAX_GUIDANCE:g}] (got {cfg})")
        seed = preset.seed if self.seed is None else self.seed
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
            raise InputError(f"{names['seed']} must be an integer in [0, 2^64 - 1] (got {seed!r})")
        try:
            fps = float(self.fps)
        except (TypeError, ValueError):
            raise InputError(f"{names['fps']} must be a number (got {self.fps!r})") from None
        if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
            raise InputError(f"{names['fps']} must be in (0, {MAX_FPS:g}] (got {self.fps})")
        if self.num_frames is not None:
            check_positive(names["num_frames"], self.num_frames)
        frames = check_positive(names["context_frames"], self.context_frames, MAX_CONTEXT)
        try:
            overlap = int(self.context_overlap)
        except (TypeError, ValueError):
            raise InputError(f"{names['context_overlap']} must be an integer (got {self.context_overlap!r})") from None
        check_context(frames, overlap, names["context_frames"], names["context_overlap"])
        if self.context_schedule not in CONTEXT_SCHEDULES:
            raise InputError(f"unknown context schedule {self.context_schedule!r}; choose one of "
                             f"{', '.join(CONTEXT_SCHEDULES)}")
        if self.context_schedule == "no_overlap":
            overlap = 0
        chunk = None if self.decode_chunk_size is None else \
            check_positive(names["decode_chunk_size"], self.decode_chunk_size, MAX_DECODE_CHUNK)
        batch = None if self.window_batch_size is None else \
            check_positive(names["window_batch_size"], self.window_batch_size, MAX_WINDOW_BATCH)
        try:
            fraction = float(self.guidance_fraction)
        except (TypeError, ValueError):
            raise InputError(f"{names['guidance_fraction']} must be a number "
                             f"(got {self.guidance_fraction!r})") from None
        if not (math.isfinite(fraction) and 0 < fraction <= 1):
            raise InputError(f"{names['guidance_fraction']} must be in (0, 1] (got {self.guidance_fraction})")
        interval = check_positive(names["deep_cache_interval"], self.deep_cache_interval, MAX_STEPS)
        for name in ("pose_cache_mb", "pose_feature_cache_mb"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InputError(f"{name.replace('_', ' ')} must be a number >= 0 (got {value!r})")
        return dataclasses.replace(
            self, width=width, height=height, steps=steps, guidance_scale=cfg, seed=int(seed), preset=preset.name,
            scheduler=check_scheduler_name(self.scheduler), context_frames=frames, context_overlap=overlap,
            fps=fps, decode_chunk_size=chunk, window_batch_size=batch,
            cache_reference_kv=bool(self.cache_reference_kv), skip_uncond_audio=bool(self.skip_uncond_audio),
            share_frame_heads=bool(self.share_frame_heads),
            compile=bool(self.compile), guidance_fraction=fraction, deep_cache_interval=interval)


def settings_from_kwargs(settings: GenerationSettings | None, **kwargs) -> GenerationSettings:
    """``settings`` (default: defaults) with any non-None keyword overrides (the legacy keyword API)."""
    base = settings or GenerationSettings()
    changes = {k: v for k, v in kwargs.items() if v is not None}
    return base.replace(**changes) if changes else base
