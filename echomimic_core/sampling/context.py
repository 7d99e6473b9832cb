"""Context windows: which latent frames each denoiser call sees.

Official behaviour (``uniform`` scheduler, closed loop, context stride 1, always called with step 0):
windows of ``size`` frames start at 0, size-overlap, 2(size-overlap), ... while the start is below the
video length, and indices wrap around modulo the length. If the video is not longer than ``size`` there is
one window ``range(L)``. At denoising step ``i`` every index is shifted by ``3*i`` modulo the length
(a literal 3, not the overlap); windows keep their wrapped order.
"""

from __future__ import annotations

from ..errors import InputError

#: the per-step circular shift of every window (hard-coded in the official pipelines)
STEP_SHIFT = 3


def check_context(size: int, overlap: int, size_name: str = "context frames",
                  overlap_name: str = "context overlap") -> None:
    if int(size) < 1:
        raise InputError(f"{size_name} must be at least 1 (got {size})")
    if int(overlap) < 0 or int(overlap) >= int(size):
        raise InputError(f"{overlap_name} must be in [0, {size_name} - 1] = [0, {int(size) - 1}] (got {overlap})")


def uniform_windows(num_frames: int, size: int, overlap: int) -> list[list[int]]:
    """The step-independent window list (the official ``context_queue``)."""
    if num_frames < 1:
        raise InputError(f"the video needs at least one frame (got {num_frames})")
    check_context(size, overlap)
    if num_frames <= size:
        return [list(range(num_frames))]
    stride = size - overlap
    return [[(start + k) % num_frames for k in range(size)] for start in range(0, num_frames, stride)]


def shifted_windows(windows: list[list[int]], step_index: int, num_frames: int,
                    shift: int = STEP_SHIFT) -> list[list[int]]:
    """The windows used at denoising step ``step_index``: each index moved by ``shift*step_index`` mod L."""
    offset = shift * int(step_index)
    return [[(k + offset) % num_frames for k in window] for window in windows]


def window_schedule(num_frames: int, num_steps: int, size: int = 12, overlap: int = 3) -> list[list[list[int]]]:
    """Windows for every step: ``result[i][j]`` is the list of frame indices of window ``j`` at step ``i``."""
    base = uniform_windows(num_frames, size, overlap)
    return [shifted_windows(base, i, num_frames) for i in range(num_steps)]
