"""Speech timing from the waveform: loudness envelope, onsets and pauses at the video frame rate.

These are signal measurements, not a second audio encoder: the gesture model itself only reads the
whisper features; the envelope is used to place pose-library joins at pauses and by the beat-alignment
metric (speech onsets vs hand velocity peaks).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

SAMPLE_RATE = 16000
FLOOR_DB, CEIL_DB = -48.0, -15.0
"""Loudness range mapped to [0, 1] (windowed RMS in dBFS)."""


def speech_envelope(waveform, fps: float = 24.0, num_frames: int | None = None,
                    sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Per-video-frame loudness in [0, 1]: RMS over a two-frame window centred on frame ``i`` (time
    ``i / fps``), in dBFS, mapped linearly from [-48, -15] dB to [0, 1]. Returns ``[num_frames]``."""
    x = np.asarray(waveform, dtype=np.float64).reshape(-1)
    if not fps > 0:
        raise InputError(f"fps must be positive, got {fps}")
    if num_frames is None:
        num_frames = int(math.floor(len(x) / sample_rate * fps))
    half = max(1, int(round(sample_rate / fps)))
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    centre = np.round(np.arange(num_frames) * sample_rate / fps).astype(np.int64)
    a, b = np.clip(centre - half, 0, len(x)), np.clip(centre + half, 0, len(x))
    energy = (csum[b] - csum[a]) / (2 * half)
    db = 10.0 * np.log10(energy + 1e-12)
    return np.clip((db - FLOOR_DB) / (CEIL_DB - FLOOR_DB), 0.0, 1.0)


def speech_onsets(envelope: np.ndarray, rise: float = 0.12, min_gap: int = 5) -> np.ndarray:
    """Frame indices of speech onsets: local maxima of the envelope's rise over two frames
    (``e[i] - e[i-2]``) that exceed ``rise``, at least ``min_gap`` frames apart (the larger rise wins).
    Syllable starts and the first word after a pause both show up as such rises."""
    e = np.asarray(envelope, dtype=np.float64)
    if e.size < 3:
        return np.zeros(0, dtype=np.int64)
    d = np.zeros_like(e)
    d[2:] = e[2:] - e[:-2]
    cand = [i for i in range(1, len(e) - 1) if d[i] > rise and d[i] >= d[i - 1] and d[i] >= d[i + 1]]
    cand.sort(key=lambda i: -d[i])
    taken: list[int] = []
    for i in cand:
        if all(abs(i - j) >= min_gap for j in taken):
            taken.append(i)
    return np.array(sorted(taken), dtype=np.int64)


def speech_pauses(envelope: np.ndarray, threshold: float = 0.15, min_frames: int = 4) -> np.ndarray:
    """Centre frames of pauses: runs of at least ``min_frames`` frames whose envelope is below
    ``threshold``. Returns sorted frame indices (the natural places to cut a gesture sequence)."""
    e = np.asarray(envelope, dtype=np.float64)
    quiet = e < threshold
    out, start = [], None
    for i, q in enumerate(np.append(quiet, False)):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if i - start >= min_frames:
                out.append((start + i - 1) // 2)
            start = None
    return np.array(out, dtype=np.int64)
