"""Gesture metrics on motions in body coordinates (``[F, 44, 2]``, see :mod:`.motion`).

* :func:`hand_speed` / :func:`velocity_peaks` - mean hand-point speed per frame (shoulder widths per
  frame, lightly smoothed) and its peaks (``scipy.signal.find_peaks``, prominence >= ``PEAK_PROMINENCE``).
* :func:`beat_alignment` - speech onsets (:func:`..speech.speech_onsets`) vs hand velocity peaks.
  Each onset scores ``exp(-d^2 / 2 sigma^2)`` with d the distance in frames to the nearest peak
  (recall side), each peak likewise to the nearest onset (precision side); the score is their
  harmonic mean, so neither "a peak everywhere" nor "one lucky peak" scores high. sigma = 2 frames
  (83 ms at 24 fps). No peaks (a still pose) or no onsets -> 0.
* :func:`diversity` - mean distance (shoulder widths, per point and frame) between motions made for
  the same audio with different seeds.
* :func:`jitter` - mean magnitude of the third difference (jerk) of the hand points.
* :func:`frechet_distance` over :func:`window_stats` - an FGD-style Frechet distance between
  Gaussians fitted to per-window statistics (1 s windows, half overlap), each statistic divided by
  its standard deviation over the real set. ``speech=True`` (the
  default, "joint FGD") appends the window's speech envelope to the motion statistics, so the
  distance measures the joint speech+motion distribution: real motion under the wrong speech (a
  random clip) differs in the speech-motion cross-covariance. ``speech=False`` gives the
  motion-only distance, for which any real clip is by definition a near-perfect sample.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .motion import N_HAND

PEAK_PROMINENCE = 0.01
"""Minimum prominence (shoulder widths per frame) of a hand-speed peak counted as a motion beat."""
SIGMA = 2.0
WINDOW, STRIDE, SUBSAMPLE = 24, 12, 4


def hand_speed(motion: np.ndarray) -> np.ndarray:
    """``[F]`` mean speed of the 42 hand points (first frame repeats the second), smoothed [1, 2, 1]/4."""
    m = np.asarray(motion, dtype=np.float64)[:, :2 * N_HAND]
    if m.shape[0] < 2:
        return np.zeros(m.shape[0])
    v = np.linalg.norm(np.diff(m, axis=0), axis=-1).mean(-1)
    v = np.concatenate([v[:1], v])
    p = np.pad(v, 1, mode="edge")
    return (p[:-2] + 2 * p[1:-1] + p[2:]) / 4


def velocity_peaks(motion: np.ndarray, prominence: float = PEAK_PROMINENCE) -> np.ndarray:
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(hand_speed(motion), prominence=prominence, distance=3)
    return peaks


def _near(a: np.ndarray, b: np.ndarray, sigma: float) -> float:
    d = np.abs(a[:, None].astype(np.float64) - b[None, :]).min(1)
    return float(np.exp(-d ** 2 / (2 * sigma ** 2)).mean())


def beat_alignment(motion: np.ndarray, onsets: np.ndarray, sigma: float = SIGMA) -> float:
    peaks = velocity_peaks(motion)
    onsets = np.asarray(onsets)
    if len(peaks) == 0 or len(onsets) == 0:
        return 0.0
    r, p = _near(onsets, peaks, sigma), _near(peaks, onsets, sigma)
    return 0.0 if r + p == 0 else 2 * r * p / (r + p)


def diversity(motions: Sequence[np.ndarray]) -> float:
    ms = [np.asarray(m, dtype=np.float64) for m in motions]
    d = [np.linalg.norm(ms[i] - ms[j], axis=-1).mean() for i in range(len(ms)) for j in range(i + 1, len(ms))]
    return float(np.mean(d)) if d else 0.0


def jitter(motion: np.ndarray) -> float:
    m = np.asarray(motion, dtype=np.float64)[:, :2 * N_HAND]
    if m.shape[0] < 4:
        return 0.0
    return float(np.linalg.norm(np.diff(m, n=3, axis=0), axis=-1).mean())


def window_stats(motion: np.ndarray, envelope: np.ndarray | None = None) -> np.ndarray:
    """``[n_windows, dims]`` statistics of 1 s windows (24 frames, stride 12) in six 4-frame bins:
    per hand the mean centre (of its 21 points) and mean speed per bin, plus the window's mean hand
    openness (fingertip-wrist distance) and elbow positions; with ``envelope`` also the speech
    envelope's mean level and mean rise per bin (so onset -> stroke timing shows in the covariance)."""
    m = np.asarray(motion, dtype=np.float64)
    F = m.shape[0]
    hands = m[:, :2 * N_HAND].reshape(F, 2, N_HAND, 2)
    centre = hands.mean(2)                                                    # [F, 2, 2]
    speed = np.concatenate([np.zeros((1, 2)), np.linalg.norm(np.diff(centre, axis=0), axis=-1)])  # [F, 2]
    openness = np.linalg.norm(hands[:, :, [4, 8, 12, 16, 20]] - hands[:, :, :1], axis=-1).mean(-1)  # [F, 2]
    if envelope is not None:
        env = np.asarray(envelope, dtype=np.float64)[:F]
        rise = np.clip(np.diff(env, prepend=env[:1]), 0, None)
    out = []
    nb = WINDOW // SUBSAMPLE
    for s in range(0, F - WINDOW + 1, STRIDE):
        w = slice(s, s + WINDOW)
        bins = lambda a: a[w].reshape(nb, SUBSAMPLE, -1).mean(1).reshape(-1)  # noqa: E731
        parts = [bins(centre.reshape(F, -1)), bins(speed) * 10, openness[w].mean(0),
                 m[w, 2 * N_HAND:].mean(0).reshape(-1)]
        if envelope is not None:
            parts += [bins(env[:, None]), bins(rise[:, None]) * 10]
        out.append(np.concatenate(parts))
    return np.array(out).reshape(-1, len(out[0]) if out else 0)


def frechet_distance(a: np.ndarray, b: np.ndarray, scale: np.ndarray | None = None) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``a`` and ``b``. ``scale``: divide
    every feature by it first (pass the real set's per-feature std, so that each statistic - a
    position, a speed, the envelope - weighs the same whatever its unit)."""
    from scipy import linalg

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if scale is not None:
        sc = np.where(np.asarray(scale) > 1e-9, scale, 1.0)
        a, b = a / sc, b / sc
    mu1, mu2 = a.mean(0), b.mean(0)
    eps = 1e-6 * np.eye(a.shape[1])  # keeps sqrtm stable for (near) singular covariances
    s1, s2 = np.cov(a, rowvar=False) + eps, np.cov(b, rowvar=False) + eps
    covmean = np.real(linalg.sqrtm(s1 @ s2))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
