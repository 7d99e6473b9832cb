"""Per-frame deep features for DeepCache-style reuse across denoising steps (a fast option).

A full step leaves, for every denoiser call, the input of the UNet's last up block
(:class:`~echomimic_core.models.unet_common.DeepFeatures`); :class:`DeepFeatureStore` averages it per frame
over the windows that covered the frame (context windows shift from step to step, so features are kept per
frame, not per window) and hands the right frames back to the cached steps' calls. Memory: branches x frames
x C x h x w in the compute dtype, growing with the video length: with CFG at 768x768 in fp16 the full-size
denoiser's 640 x 96 x 96 features take ~24 MB per frame (2.8 GB for 120 frames).
"""

from __future__ import annotations

from typing import Optional

import torch

from .guidance import WindowAccumulator

__all__ = ["DeepFeatureStore"]


class DeepFeatureStore:
    def __init__(self) -> None:
        self.features: Optional[torch.Tensor] = None    # [branches, F, C, h, w]
        self._acc: Optional[WindowAccumulator] = None
        self._num_frames = 0

    def ready(self, branches: int) -> bool:
        """Whether a cached step with ``branches`` (2 with CFG: [uncond, cond]) can be served."""
        return self.features is not None and self.features.shape[0] >= branches

    def begin(self, num_frames: int) -> None:
        self.features = None  # a full step recomputes everything: the old features go before the new ones grow
        self._acc, self._num_frames = None, num_frames

    def add(self, windows: list[list[int]], features: torch.Tensor, branches: int) -> None:
        """``features [(branches B f), C, h, w]`` of one call over the B ``windows``: summed per frame by the
        same accumulator as the step's predictions (its ``[branches * B, C, f, h, w]`` layout)."""
        prediction = features.unflatten(0, (branches * len(windows), len(windows[0]))).transpose(1, 2)
        if self._acc is None:
            c, h, w = features.shape[1:]
            # in the compute dtype: at most a few overlapping windows are summed per frame
            self._acc = WindowAccumulator(branches, (1, c, self._num_frames, h, w), device=features.device,
                                          dtype=features.dtype)
        self._acc.add_batch(windows, prediction)

    def finish(self, dtype: torch.dtype) -> None:
        self.features = self._acc.mean_().transpose(1, 2).to(dtype)  # [branches, C, F, h, w] -> per frame first
        self._acc = None

    def gather(self, windows: list[list[int]], branches: int) -> torch.Tensor:
        """The stored features of ``windows`` as one call's ``[(branches B f), C, h, w]`` (the last
        ``branches`` stored branches: the conditional one alone when the step runs without CFG)."""
        idx = torch.tensor([k for w in windows for k in w], dtype=torch.long).to(self.features.device)
        return self.features[-branches:].index_select(1, idx).flatten(0, 1)
