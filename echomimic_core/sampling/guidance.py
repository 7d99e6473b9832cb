"""Merging window predictions and classifier-free guidance."""

from __future__ import annotations

import torch


def uses_cfg(guidance_scale: float) -> bool:
    """The official switch: an unconditional pass is run only when the scale is above 1."""
    return float(guidance_scale) > 1.0


class WindowAccumulator:
    """Sums per-window predictions into a full-length buffer and counts coverage per frame.

    ``branches`` is 2 with CFG (batch order [uncond, cond]) and 1 without. :meth:`mean` returns the
    average over the windows that covered each frame, for every branch (the accelerated pipeline's rule;
    the official plain pipeline forgets the division without CFG - that is a bug we do not copy).
    """

    def __init__(self, branches: int, latent_shape: tuple[int, ...], device, dtype) -> None:
        b, c, f, h, w = latent_shape
        self.sum = torch.zeros((branches * b, c, f, h, w), device=device, dtype=dtype)
        self.count = torch.zeros((1, 1, f, 1, 1), device=device, dtype=dtype)

    def add(self, indices: list[int], prediction: torch.Tensor) -> None:
        idx = torch.as_tensor(indices, device=self.sum.device, dtype=torch.long)
        # windows never repeat a frame (size <= length), so index_add_ equals the official "+=" on a gather
        self.sum.index_add_(2, idx, prediction.to(self.sum.dtype))
        self.count.index_add_(2, idx, torch.ones((1, 1, len(indices), 1, 1), device=self.count.device,
                                                   dtype=self.count.dtype))

    def mean(self) -> torch.Tensor:
        if bool((self.count == 0).any()):
            raise RuntimeError("some frames were not covered by any context window")
        return self.sum / self.count

    def mean_(self) -> torch.Tensor:
        """:meth:`mean` computed in the sum buffer (no second full-length buffer); the accumulator is spent."""
        if bool((self.count == 0).any()):
            raise RuntimeError("some frames were not covered by any context window")
        return self.sum.div_(self.count)


def apply_guidance(averaged: torch.Tensor, guidance_scale: float, inplace: bool = False) -> torch.Tensor:
    """``uncond + s*(cond - uncond)`` on an averaged [uncond; cond] batch, or identity without CFG.

    ``inplace=True`` overwrites the cond half of ``averaged`` and returns it (same values bit for bit:
    IEEE products and sums are commutative)."""
    if not uses_cfg(guidance_scale):
        return averaged
    uncond, cond = averaged.chunk(2)
    if inplace:
        return cond.sub_(uncond).mul_(float(guidance_scale)).add_(uncond)
    return uncond + float(guidance_scale) * (cond - uncond)
