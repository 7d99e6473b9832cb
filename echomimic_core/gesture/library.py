"""Pose sequences without a gesture model: still hands, and a pose library cut at speech pauses.

Both work on arm motion in body coordinates (:mod:`.motion`) placed on the reference person, so a
library clip recorded from anyone moves the reference's own arms (scaled by shoulder width, centred
on the neck), and everything else in the frame is the reference's.

Join bound of :func:`pose_library`
----------------------------------
At a join, the outgoing segment continues along its own source (ping-pong, so it never jumps) while
the incoming one fades in with smoothstep weights ``w_k = S(k / (K + 1))``, ``S(x) = 3x^2 - 2x^3``.
A blended point moves per frame by at most ``max(|dA|, |dB|) + max_k |w_k - w_{k-1}| * max_k |B_k - A_k|``
and ``max |w_k - w_{k-1}| <= 1.5 / (K + 1)``. ``K`` is chosen as the smallest fade with
``1.5 * gap / (K + 1) <= join_step`` (gap = the largest point distance between the two tracks over
the fade), so **no point moves more than (the largest step inside the source clips) + join_step
per frame at a join**. A segment too short for the fade it needs is merged into the previous one.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..pose.formats import PoseSequence
from ..pose.length import fit_length_indices
from .motion import Anchor, body_frame_arrays, frame_arrays, points_from_arrays, to_motion

JOIN_STEP = 0.01
"""Default extra per-frame movement (normalised image units) a join may add."""


def still_hands(reference: dict, num_frames: int, size: Sequence[int] = (1, 1), fps: float = 24.0) -> PoseSequence:
    """``num_frames`` copies of the reference's own pose: lip-sync and head motion only, the hands
    held exactly where the reference image shows them."""
    if int(num_frames) < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    anchor = Anchor(reference, size)
    return PoseSequence(anchor.frames(np.repeat(anchor.motion[None], int(num_frames), 0)), fps=fps)


def clip_motion(seq: PoseSequence, size: Sequence[int] = (1, 1)) -> np.ndarray:
    """Arm motion ``[F, 44, 2]`` of a pose sequence (its main person) in body coordinates; frames
    where a point is missing hold its last seen value (or the first seen one)."""
    arrs = [frame_arrays(f) for f in seq.frames]
    cat = {k: np.concatenate([a[k] for a in arrs]) for k in arrs[0]}
    origin, scale = body_frame_arrays(cat["bodies"], cat["bodies_score"], size)
    ok = np.isfinite(scale) & np.isfinite(origin).all(-1)
    if not ok.any():
        raise InputError("a library clip never shows both shoulders; it cannot be placed on the reference body")
    idx = np.maximum.accumulate(np.where(ok, np.arange(len(ok)), -1))
    idx[idx < 0] = int(np.argmax(ok))
    origin, scale = origin[idx], scale[idx]
    pts, valid = points_from_arrays(cat["bodies"], cat["bodies_score"], cat["hands"], cat["hands_score"])
    m = to_motion(pts, origin, scale, size)
    for p in range(m.shape[1]):
        v = valid[:, p]
        if not v.any():
            m[:, p] = np.nan
            continue
        j = np.maximum.accumulate(np.where(v, np.arange(len(v)), -1))
        j[j < 0] = int(np.argmax(v))
        m[:, p] = m[j, p]
    return m


def _smoothstep(k: int) -> np.ndarray:
    x = np.arange(1, k + 1) / (k + 1)
    return 3 * x ** 2 - 2 * x ** 3


def _cuts(num_frames: int, pauses, min_segment: int, max_segment: int) -> list[int]:
    """Segment starts (excluding 0) at pauses, at least ``min_segment`` apart and from the end; a
    stretch longer than ``max_segment`` without a usable pause is cut every ``max_segment`` frames."""
    usable = sorted(int(p) for p in (pauses if pauses is not None else []) if 0 < int(p) < num_frames)
    cuts, last = [], 0
    for p in usable + [num_frames]:
        while p - last > max_segment and num_frames - (last + max_segment) >= min_segment:
            last += max_segment
            cuts.append(last)
        if p < num_frames and p - last >= min_segment and num_frames - p >= min_segment:
            cuts.append(p)
            last = p
    return cuts


def pose_library(clips: Sequence[PoseSequence], num_frames: int, reference: dict | None = None, *,
                 pauses: Sequence[int] | None = None, seed: int = 0, size: Sequence[int] = (1, 1),
                 join_step: float = JOIN_STEP, min_segment: int = 24, max_segment: int = 120,
                 candidates: int = 8, fps: float = 24.0) -> PoseSequence:
    """A sequence of exactly ``num_frames`` frames from library ``clips``, cut at speech ``pauses``
    (frame indices, e.g. :func:`..speech.speech_pauses`; segments of ``min_segment`` ..
    ``max_segment`` frames), placed on ``reference`` (default: the first clip's first frame).

    Each segment takes a seeded choice among ``candidates`` random (clip, start) pairs, the one whose
    start is nearest the current pose; joins are cross-faded so that no point moves more than the
    source clips' own largest step plus ``join_step`` per frame (module docstring)."""
    n = int(num_frames)
    if n < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    if not clips or any(len(c) == 0 for c in clips):
        raise InputError("the pose library needs at least one clip, and no empty clips")
    anchor = Anchor(reference if reference is not None else clips[0][0], size)
    fill = anchor.motion
    tracks = []
    for c in clips:
        m = clip_motion(c, size)
        m = np.where(np.isfinite(m), m, fill[None])
        tracks.append(m)
    rng = np.random.default_rng(int(seed))
    px = np.array([size[1], size[0]], dtype=np.float64) / anchor.scale  # body units -> normalised image units

    def follow(ci: int, start: int, length: int) -> np.ndarray:  # ping-pong along one clip: never jumps
        t = tracks[ci]
        idx = fit_length_indices(len(t), start + length, "pingpong")[start:]
        return t[idx]

    def img_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.linalg.norm((a - b) / px, axis=-1)

    cuts = _cuts(n, pauses, min_segment, max_segment) + [n]
    out = np.zeros((n, fill.shape[0], 2))
    ci = int(rng.integers(len(tracks)))
    start = int(rng.integers(len(tracks[ci])))
    out[:cuts[0]] = follow(ci, start, cuts[0])
    pos = (start, cuts[0])  # (clip start, frames used) of the current segment
    done = cuts[0]
    for nxt in cuts[1:]:
        length = nxt - done
        cur = out[done - 1]
        best = None
        for _ in range(max(1, candidates)):
            cj = int(rng.integers(len(tracks)))
            sj = int(rng.integers(len(tracks[cj])))
            d = float(img_dist(tracks[cj][sj], cur).max())
            if best is None or d < best[0]:
                best = (d, cj, sj)
        _, cj, sj = best
        incoming = follow(cj, sj, length)
        outgoing = follow(ci, pos[0], pos[1] + length)[pos[1]:]
        k = 1
        while True:  # smallest fade whose bound holds over its own span
            gap = float(img_dist(incoming[:k], outgoing[:k]).max())
            need = max(1, math.ceil(1.5 * gap / join_step) - 1)
            if need <= k or k >= length - 1:
                k = max(k, need)
                break
            k = need
        if k > length - 1:  # too short to complete the fade: keep following the outgoing clip
            out[done:nxt] = outgoing
            pos = (pos[0], pos[1] + length)
        else:
            w = _smoothstep(k)[:, None, None]
            out[done:nxt] = incoming
            out[done:done + k] = (1 - w) * outgoing[:k] + w * incoming[:k]
            ci, pos = cj, (sj, length)
        done = nxt
    return PoseSequence(anchor.frames(out), fps=fps)
