"""Frame heads shared by the overlapping context windows of one denoising step (an exact speed-up).

Everything in the denoiser before its first motion module - ``conv_in``, the pose features, the first ResNet and
spatial transformer (reference attention, audio cross-attention) - acts on each frame alone
(:class:`~echomimic_core.models.unet_common.FrameHead`). With the official schedule a step's windows overlap (12
frames, 3 shared with each neighbour: 72 frame passes for 48 frames), so each frame's head is computed once per
step and handed to every window that covers it. :class:`FrameHeadShare` plans one step: it computes the heads of
a window batch's frames it does not hold yet, keeps those that a later batch of the step needs again and drops
them after their last batch, so it holds at most the frames two neighbouring batches share (memory stays flat).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..models.unet_common import FrameHead

__all__ = ["FrameHeadShare", "frames_repeat"]


def frames_repeat(windows: list[list[int]]) -> bool:
    """Whether some frame is covered by more than one of a step's ``windows`` (only then is sharing worth it)."""
    frames = [k for w in windows for k in w]
    return len(set(frames)) < len(frames)


class FrameHeadShare:
    """One step's frame heads. ``batches``: the step's window batches in the order they run."""

    def __init__(self, batches: list[list[list[int]]]) -> None:
        self._last_batch = {k: b for b, windows in enumerate(batches) for w in windows for k in w}
        self._kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # frame -> ([branches, C, h, w] x 2)
        self._batch = 0

    def heads(self, windows: list[list[int]], branches: int,
              compute: Callable[[list[int]], FrameHead]) -> FrameHead:
        """The :class:`FrameHead` of the next batch, rows ``[(branches B f)]`` in the denoiser call's order
        (branch-major, then window, then frame). ``compute(frames)`` returns the heads of ``frames`` as rows
        ``[(branches n)]``; it is called once, for the frames not held."""
        frames = list(dict.fromkeys(k for w in windows for k in w))
        new = [k for k in frames if k not in self._kept]
        held = [k for k in frames if k in self._kept]
        parts = [self._stack(held)] if held else []
        if new:
            head = compute(new)
            parts.append(tuple(t.unflatten(0, (branches, len(new))) for t in (head.inputs, head.hidden)))
        pool = [torch.cat([p[i] for p in parts], dim=1) if len(parts) > 1 else parts[0][i] for i in (0, 1)]
        position = {k: j for j, k in enumerate(held + new)}
        n = len(position)
        for k in frames:
            if self._last_batch[k] > self._batch and k not in self._kept:
                self._kept[k] = (pool[0][:, position[k]].clone(), pool[1][:, position[k]].clone())
            elif self._last_batch[k] <= self._batch:
                self._kept.pop(k, None)
        self._batch += 1
        rows = torch.tensor([r * n + position[k] for r in range(branches) for w in windows for k in w],
                            device=pool[0].device)
        inputs, hidden = (t.flatten(0, 1).index_select(0, rows) for t in pool)
        return FrameHead(inputs=inputs, hidden=hidden)

    def _stack(self, frames: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(torch.stack([self._kept[k][i] for k in frames], dim=1) for i in (0, 1))
