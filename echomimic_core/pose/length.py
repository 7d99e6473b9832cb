"""Fit a pose sequence to a target frame count (e.g. the number of audio frames)."""

from __future__ import annotations

from ..errors import InputError
from .formats import PoseSequence

POLICIES = ("trim", "loop", "pingpong", "hold")
"""Length policies. A longer sequence is always cut to its first ``n`` frames. A shorter one:

* ``trim``: cannot be lengthened -> :class:`InputError` (use this to insist the poses cover the audio),
* ``loop``: 0, 1, ..., L-1, 0, 1, ...
* ``pingpong``: 0, 1, ..., L-1, L-2, ..., 1, 0, 1, ... (no frame repeated at the turns),
* ``hold``: the last frame is repeated.
"""


def fit_length_indices(length: int, n: int, policy: str = "loop") -> list[int]:
    """Source frame index for each of ``n`` output frames of a ``length``-frame sequence.

    The sampler can use this to render only the frames of one window (with
    :func:`~echomimic_core.pose.render_frames`) instead of materialising the whole fitted sequence.
    """
    length, n = int(length), int(n)
    if policy not in POLICIES:
        raise InputError(f"unknown pose length policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if n < 0:
        raise InputError(f"target frame count must be >= 0, got {n}")
    if n == 0:
        return []
    if length <= 0:
        raise InputError("the pose sequence is empty; it cannot be fitted to any length")
    if n <= length:
        return list(range(n))
    if policy == "trim":
        raise InputError(f"the pose sequence has {length} frames but {n} are needed; policy 'trim' only "
                         "shortens - use 'loop', 'pingpong' or 'hold' to lengthen it")
    if policy == "loop":
        return [i % length for i in range(n)]
    if policy == "hold":
        return [min(i, length - 1) for i in range(n)]
    if length == 1:
        return [0] * n
    period = 2 * (length - 1)
    return [i % period if i % period < length else period - i % period for i in range(n)]


def fit_length(seq: PoseSequence, n: int, policy: str = "loop") -> PoseSequence:
    """A sequence of exactly ``n`` frames made from ``seq`` with ``policy`` (see :data:`POLICIES`).
    Frames are shared, not copied, so this is cheap even for long targets."""
    return seq.select(fit_length_indices(len(seq), n, policy))
