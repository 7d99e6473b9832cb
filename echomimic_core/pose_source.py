"""Pose images for any subset of frames of a generation, drawn on demand (flat memory in the video length)."""

from __future__ import annotations

import zlib
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .errors import InputError

__all__ = ["PoseSource"]


class PoseSource:
    """Pose images for any frame subset, drawn on demand.

    Built from (a) a pose-image tensor: float ``[1, 3, F, H, W]`` / ``[3, F, H, W]`` in [0, 1] (the official
    ``poses_tensor``) or uint8 ``[F, H, W, 3]``; (b) a pose sequence (``echomimic_core.pose.PoseSequence``,
    drawn with ``render_frames`` per window); or (c) a callable ``fn(indices, height, width) -> uint8
    [n, H, W, 3]``. ``images(indices)`` returns float ``[1, 3, n, H, W]`` in [0, 1].
    """

    def __init__(self, poses: Any, width: int, height: int, length: int | None = None,
                 cache_bytes: int = 0) -> None:
        self.width, self.height = width, height
        # drawn frames are kept compressed (bounding box of the non-black pixels, zlib) up to a fixed budget,
        # so that later steps do not redraw them; the budget, not the video length, bounds the memory
        self.cache_bytes = max(0, int(cache_bytes))
        self._cache: dict[int, tuple] = {}
        self._cache_used = 0
        self._tensor: torch.Tensor | None = None
        self._uint8_hwc = False
        self._draw: Callable[[list[int]], np.ndarray] | None = None
        if isinstance(poses, np.ndarray):
            poses = torch.from_numpy(poses)
        if isinstance(poses, torch.Tensor):
            t = poses.detach()
            if t.dtype == torch.uint8 and t.ndim == 4 and t.shape[-1] == 3:
                self._uint8_hwc = True
                frames, h, w = t.shape[0], t.shape[1], t.shape[2]
            else:
                if t.ndim == 4:
                    t = t[None]
                if t.ndim != 5 or t.shape[0] != 1 or t.shape[1] != 3:
                    raise InputError("pose images must be [1, 3, F, H, W] (float in [0, 1]) or [F, H, W, 3] "
                                     f"(uint8); got shape {tuple(poses.shape)}")
                if t.dtype == torch.uint8:
                    t = t.float() / 255.0
                frames, h, w = t.shape[2], t.shape[3], t.shape[4]
            if (h, w) != (height, width):
                raise InputError(f"pose images are {w}x{h} but the video is {width}x{height}")
            self._tensor = t
            self.length = int(frames)
        elif callable(poses) and not hasattr(poses, "frames"):
            if length is None:
                raise InputError("a pose drawing callable needs the sequence length")
            self._draw = lambda idx: poses(idx, height, width)
            self.length = int(length)
        elif hasattr(poses, "frames") and hasattr(poses, "__len__"):
            from .pose import render_frames

            seq = poses
            self._draw = lambda idx: render_frames(seq, idx, height, width)
            self.length = len(seq)
        else:
            raise InputError(f"unsupported pose input {type(poses).__name__}: pass pose images or a PoseSequence")
        if self.length < 1:
            raise InputError("the pose sequence is empty")

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        idx = [int(i) for i in indices]
        if self._tensor is not None:
            if self._uint8_hwc:
                sel = self._tensor[idx].permute(3, 0, 1, 2)[None].float() / 255.0
            else:
                sel = self._tensor[:, :, idx].float()
            return sel.contiguous()
        drawn = self._drawn(idx)
        return torch.from_numpy(drawn.astype(np.float32) / 255.0).permute(3, 0, 1, 2)[None].contiguous()

    def _drawn(self, idx: list[int]) -> np.ndarray:
        """uint8 ``[n, H, W, 3]`` drawings of frames ``idx`` (cached ones decompressed, others drawn)."""
        out = np.zeros((len(idx), self.height, self.width, 3), dtype=np.uint8)
        missing = [i for i in dict.fromkeys(idx) if i not in self._cache]
        fresh: dict[int, np.ndarray] = {}
        if missing:
            drawn = np.asarray(self._draw(missing))
            if drawn.shape != (len(missing), self.height, self.width, 3):
                raise InputError(f"pose drawing returned shape {drawn.shape}, expected "
                                 f"{(len(missing), self.height, self.width, 3)}")
            drawn = drawn.astype(np.uint8, copy=False)
            for k, i in enumerate(missing):
                fresh[i] = drawn[k]
                self._remember(i, drawn[k])
        for k, i in enumerate(idx):
            if i in fresh:
                out[k] = fresh[i]
            else:
                y0, y1, x0, x1, blob = self._cache[i]
                if blob is not None:
                    out[k, y0:y1, x0:x1] = np.frombuffer(zlib.decompress(blob), np.uint8).reshape(y1 - y0, x1 - x0, 3)
        return out

    def _remember(self, index: int, image: np.ndarray) -> None:
        if self._cache_used >= self.cache_bytes:
            return
        rows = np.flatnonzero(image.any(axis=(1, 2)))
        if rows.size == 0:
            entry = (0, 0, 0, 0, None)
            size = 64
        else:
            cols = np.flatnonzero(image.any(axis=(0, 2)))
            y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            blob = zlib.compress(np.ascontiguousarray(image[y0:y1, x0:x1]).tobytes(), 1)
            entry = (y0, y1, x0, x1, blob)
            size = len(blob) + 64
        if self._cache_used + size <= self.cache_bytes:
            self._cache[index] = entry
            self._cache_used += size
