"""Per-video-frame windows over the 50-per-second whisper features (official `feature2chunks`), and the
frame-count rules the sampler needs.

Video frame i looks at feature positions centre-4 ... centre+5 with centre = int(i * 50 / fps), clamped into
[0, N-1] (edges repeat the first/last feature). The 10 positions x (n_layer+1) states are flattened
time-major into 10*(n_layer+1) tokens of width 384.

Two different frame counts exist upstream; both are provided under distinct names:
  * `video_frame_count(duration_s, fps)` = int(duration_s * fps): infer.py's cap on the video length,
    which is what a sampler should use to size the video;
  * `chunk_count(num_positions, fps)`: how many per-frame chunks the pipeline builds (usually 1-2 more
    than the above); the pipeline caps the video length at it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError
from .decode import SAMPLE_RATE
from .mel import HOP_LENGTH, SEGMENT_FRAMES

FEATURES_PER_SECOND = 50
AUDIO_FEAT_LENGTH = (2, 2)
"""Official context (frames before, frames after); each frame spans 2 feature steps."""


def _check_fps(fps) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)):
        raise InputError(f"fps must be a positive number, got {fps!r}")
    if not math.isfinite(float(fps)) or fps <= 0:
        raise InputError(f"fps must be a positive finite number, got {fps!r}")
    return fps


def _check_positions(num_positions) -> int:
    n = int(num_positions)
    if n < 1:
        raise InputError(
            f"there are {n} audio feature positions; at least one (20 ms of audio) is needed. Give a longer clip."
        )
    return n


def chunk_count(num_positions: int, fps: float = 24) -> int:
    """Number of per-frame chunks the official `feature2chunks` returns for N feature positions:
    1 + the first i with int(i * (50 / fps)) > N (the loop appends before it tests)."""
    fps = _check_fps(fps)
    n = _check_positions(num_positions)
    step = FEATURES_PER_SECOND / fps  # the official stop test uses this pre-divided multiplier
    i = max(0, int(n / step) - 2)
    while i > 0 and int(i * step) > n:
        i -= 1
    while int(i * step) <= n:
        i += 1
    return i + 1


def chunk_source_indices(
    num_positions: int, fps: float = 24, audio_feat_length: Sequence[int] = AUDIO_FEAT_LENGTH
) -> torch.Tensor:
    """LongTensor [num_chunks, 2*(a+b+1)] of the feature positions each video frame's chunk is built from
    (10 per frame for the official (2, 2))."""
    fps = _check_fps(fps)
    n = _check_positions(num_positions)
    before, after = (int(v) for v in audio_feat_length)
    frames = np.arange(chunk_count(n, fps), dtype=np.int64)
    # int(i * 50 / fps) in float64, like the official Python expression (i*50 is exact, then one division).
    centre = np.floor((frames * FEATURES_PER_SECOND).astype(np.float64) / float(fps)).astype(np.int64)
    offsets = np.arange(-2 * before, 2 * (after + 1), dtype=np.int64)
    idx = np.clip(centre[:, None] + offsets[None, :], 0, n - 1)
    return torch.from_numpy(idx)


def frame_chunks(
    features: torch.Tensor, fps: float = 24, audio_feat_length: Sequence[int] = AUDIO_FEAT_LENGTH
) -> torch.Tensor:
    """Whisper features [N, n_layer+1, D] -> per-frame audio tokens [num_chunks, 10*(n_layer+1), D]
    (token k of a frame = feature step k // (n_layer+1), state k % (n_layer+1))."""
    if features.ndim != 3:
        raise InputError(f"features must be [positions, layers, width], got {tuple(features.shape)}")
    idx = chunk_source_indices(features.shape[0], fps, audio_feat_length).to(features.device)
    gathered = features[idx]  # [chunks, 10, L+1, D]
    return gathered.reshape(idx.shape[0], -1, features.shape[-1])


def feature_positions(num_samples: int) -> int:
    """Number of whisper feature positions N for a 16 kHz clip of num_samples samples (without running it):
    sum over 3000-frame mel segments of floor(frames / 2)."""
    frames = int(num_samples) // HOP_LENGTH
    full, tail = divmod(frames, SEGMENT_FRAMES)
    return full * (SEGMENT_FRAMES // 2) + tail // 2


#: samples decoded past the last whole 30 s segment: covers the STFT window (n_fft 400, centred) of the
#: segment's last mel frame, so the mel frames of the kept segments equal the whole clip's
_SPAN_MARGIN = 1600


def audio_span_samples(num_frames: int, fps: float = 24,
                       audio_feat_length: Sequence[int] = AUDIO_FEAT_LENGTH) -> int:
    """16 kHz samples to decode so that the first ``num_frames`` video frames get the features they would
    get from the whole clip: whole 30 s encoder segments covering every feature position those frames'
    chunks read, plus the STFT margin. (One difference stays: the log-mel floor, peak - 80 dB, is taken
    over the decoded span; it only matters when a louder passage lies beyond it.)"""
    fps = _check_fps(fps)
    frames = int(num_frames)
    if frames < 1:
        raise InputError(f"number of frames must be positive, got {num_frames!r}")
    after = int(audio_feat_length[1])
    last_position = int((frames - 1) * FEATURES_PER_SECOND / float(fps)) + 2 * (after + 1)
    segments = last_position // (SEGMENT_FRAMES // 2) + 1
    return segments * SEGMENT_FRAMES * HOP_LENGTH + _SPAN_MARGIN


def span_mel_frames(num_samples: int) -> int:
    """Mel frames to keep of a span decoded by :func:`audio_span_samples`: the whole segments only."""
    frames = int(num_samples) // HOP_LENGTH
    return frames - frames % SEGMENT_FRAMES if frames > SEGMENT_FRAMES else frames


def video_frame_count(duration_s: float, fps: float = 24) -> int:
    """infer.py's video-length cap: int(duration_s * fps). Use it to size the generated video."""
    fps = _check_fps(fps)
    try:
        duration = float(duration_s)
    except (TypeError, ValueError):
        raise InputError(f"duration must be a number of seconds, got {duration_s!r}") from None
    if not math.isfinite(duration) or duration < 0:
        raise InputError(f"duration must be a finite, non-negative number of seconds, got {duration_s!r}")
    return int(duration * fps)


def audio_chunk_count(num_samples: int, fps: float = 24) -> int:
    """The pipeline's cap for a 16 kHz clip of num_samples samples: chunk_count(feature_positions(...))."""
    return chunk_count(feature_positions(num_samples), fps)


def duration_seconds(num_samples: int) -> float:
    """Duration of a 16 kHz clip in seconds."""
    return int(num_samples) / SAMPLE_RATE
