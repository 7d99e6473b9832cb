"""What one generation is, as data: the :class:`GenerationPlan` decided before any heavy work, the step-independent
:class:`Conditioning`, the :class:`Progress` reports and the :class:`GenerationResult` (the loop that uses them is
:mod:`echomimic_core.engine`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .pose_source import PoseSource
from .sampling.deep_cache import DeepFeatureStore
from .settings import GenerationSettings

__all__ = ["Conditioning", "GenerationPlan", "GenerationResult", "Progress"]


@dataclass(frozen=True)
class Progress:
    """One progress report. ``done``/``total`` count units of work over the whole run (every window of
    every step, then every decoded chunk) so a single bar can show it."""

    phase: str          # "denoise" or "decode"
    step: int           # 0-based denoising step (steps when decoding)
    num_steps: int
    window: int         # windows of this step done so far, or decoded frames so far
    num_windows: int    # windows per step, or frames to decode
    done: int
    total: int
    timestep: int | None = None


@dataclass
class GenerationResult:
    """What :meth:`EchoMimicPipeline.generate` returns.

    ``latents`` [1, 4, F, h, w] are the final latents (before ``1/0.18215``), float32 on CPU.
    ``frames`` is ``None`` when the frames were streamed to ``on_frames`` (or ``decode=False``); otherwise a
    float32 CPU tensor [F, 3, H, W] in [0, 1]. ``unet_calls`` lists the batch size of every denoiser call.
    """

    latents: torch.Tensor
    frames: Optional[torch.Tensor]
    num_frames: int
    timesteps: list
    windows_per_step: list[list[list[int]]]
    guidance_scale: float
    seed: int
    width: int
    height: int
    unet_calls: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    settings: Optional[GenerationSettings] = None


@dataclass
class GenerationPlan:
    """Everything decided before heavy work (see :meth:`SamplingEngine.plan`)."""

    settings: GenerationSettings
    num_frames: int
    shape: tuple[int, ...]                  # latent shape [1, C, F, h, w]
    scheduler: Any
    timesteps: list                         # the scheduler's timesteps (tensor elements)
    schedule: list[list[list[int]]]         # windows per step
    batches: list[list[list[list[int]]]]    # per step: window batches
    guided: list[bool]                      # per step: this step runs CFG (``guidance_fraction``)
    image: Any
    audio: torch.Tensor                     # [F', tokens, C] CPU
    poses: PoseSource
    latents: torch.Tensor                   # initial latents, float32 on the device
    decode_chunk: int
    pose_feature_frames: int                # frames 0..n-1 get their pose features encoded once
    notes: list[str]
    step_kwargs: dict

    @property
    def do_cfg(self) -> bool:
        """Whether any step runs the unconditional branch."""
        return any(self.guided)

    @property
    def total_units(self) -> int:
        return sum(len(w) for w in self.schedule) + math.ceil(self.num_frames / self.decode_chunk)


@dataclass
class Conditioning:
    """Step-independent inputs of the denoiser for one generation (see :meth:`SamplingEngine.prepare`)."""

    bank: Any
    audio: torch.Tensor                     # [F, tokens, C] on the device, compute dtype
    pose_features: Optional[torch.Tensor]   # [1, C0, n, h, w] of frames 0..n-1, or None
    cache: Optional[dict]
    deep: Optional[DeepFeatureStore] = None  # DeepCache (``deep_cache_interval`` > 1)
