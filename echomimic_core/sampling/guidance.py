"""Merging window predictions and classifier-free guidance."""

from __future__ import annotations

import torch


def uses_cfg(guidance_scale: float) -> bool:
    """The official switch: an unconditional pass is run only when the scale is above 1."""
    return float(guidance_scale) > 1.0


class WindowAccumulator:
    """Sums per-window predictions into a full-length buffer and averages by per-frame coverage.

    ``branches`` is 2 with CFG (batch order [uncond, cond]) and 1 without. :meth:`mean` returns the
    average over the windows that covered each frame, for every branch (the accelerated pipeline's rule;
    the official plain pipeline forgets the division without CFG - that is a bug we do not copy).
    ``windows`` (all windows of the step) lets the coverage be counted on the host up front: no device
    sync, and an uncovered frame is an error before any work.
    """

    def __init__(self, branches: int, latent_shape: tuple[int, ...], device, dtype,
                 windows: list[list[int]] | None = None) -> None:
        b, c, f, h, w = latent_shape
        self.branches = branches
        self.sum = torch.zeros((branches * b, c, f, h, w), device=device, dtype=dtype)
        self.count = torch.zeros((1, 1, f, 1, 1), device=device, dtype=dtype)
        self._counted = windows is not None
        if windows is not None:
            counts = [0] * f
            for window in windows:
                for k in window:
                    counts[k] += 1
            if 0 in counts:
                raise RuntimeError("some frames were not covered by any context window")
            self.count = torch.tensor(counts, dtype=dtype).view(1, 1, f, 1, 1).to(device)

    def add(self, indices: list[int], prediction: torch.Tensor) -> None:
        idx = torch.as_tensor(indices, dtype=torch.long).to(self.sum.device)
        # windows never repeat a frame (size <= length), so index_add_ equals the official "+=" on a gather
        self.sum.index_add_(2, idx, prediction.to(self.sum.dtype))
        if not self._counted:
            self.count.index_add_(2, idx, torch.ones((1, 1, len(indices), 1, 1), device=self.count.device,
                                                       dtype=self.count.dtype))

    def add_batch(self, windows: list[list[int]], prediction: torch.Tensor) -> None:
        """``prediction`` ``[branches * B, C, f, h, w]`` of B windows, ordered ``[branch 0: w1..wB, branch 1:
        w1..wB]`` (what a batched denoiser call returns); added window by window, in order."""
        per_branch = prediction.shape[0] // self.branches
        parts = prediction.unflatten(0, (self.branches, per_branch))
        for j, window in enumerate(windows):
            self.add(window, parts[:, j])

    def _check(self) -> None:
        if not self._counted and bool((self.count == 0).any()):
            raise RuntimeError("some frames were not covered by any context window")

    def mean(self) -> torch.Tensor:
        self._check()
        return self.sum / self.count

    def mean_(self) -> torch.Tensor:
        """:meth:`mean` computed in the sum buffer (no second full-length buffer); the accumulator is spent."""
        self._check()
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


def mask_conditions(audio: torch.Tensor | None, pose_features: torch.Tensor | None, keep, *,
                    pose_keep=None):
    """The unconditional-branch rule of EchoMimicV2's classifier-free guidance, in one place.

    A batch element with ``keep`` False is unconditional: its audio tokens are zero, its pose features are zero
    and it does not read the reference (``reference_mask`` False). The sampler uses it for the ``[uncond, cond]``
    CFG batch; the trainer for the joint condition dropout (``pose_keep``: extra pose-only dropout, and-ed).

    ``audio`` ``[b, f, n, C]``, ``pose_features`` ``[b, C0, f, h, w]`` (either may be None), ``keep`` ``[b]``
    bools (a tensor, or a Python sequence - then the returned reference mask stays a tuple, which lets the
    attention processors split the batch without a device sync). Returns ``(audio, pose_features,
    reference_mask)``; values of kept elements are untouched (multiplied by exactly 1).
    """
    if keep is None:
        if pose_keep is None or pose_features is None:
            return audio, pose_features, None
        keep_t = torch.ones_like(torch.as_tensor(pose_keep, dtype=torch.bool))
        mask = None
    elif isinstance(keep, torch.Tensor):
        keep_t, mask = keep.to(torch.bool).reshape(-1), keep
    else:
        mask = tuple(bool(k) for k in keep)
        keep_t = torch.tensor(mask, dtype=torch.bool)
    if audio is not None:
        audio = audio * keep_t.to(audio.device, audio.dtype).view(-1, *([1] * (audio.ndim - 1)))
    if pose_features is not None:
        pk = keep_t.to(pose_features.device)
        if pose_keep is not None:
            pk = pk & torch.as_tensor(pose_keep, dtype=torch.bool, device=pose_features.device).reshape(-1)
        pose_features = pose_features * pk.to(pose_features.dtype).view(-1, *([1] * (pose_features.ndim - 1)))
    return audio, pose_features, mask
