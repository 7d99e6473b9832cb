"""Per-frame windows and frame counts vs a literal restatement of the official loop (AUDIO.md §4),
over many clip lengths and frame rates."""

from __future__ import annotations

import pytest
import torch

from echomimic_core.audio import (
    audio_chunk_count,
    chunk_count,
    chunk_source_indices,
    feature_positions,
    frame_chunks,
    video_frame_count,
)
from echomimic_core.errors import InputError


def official_loop(n: int, fps, before: int = 2, after: int = 2) -> list[list[int]]:
    """The official feature2chunks/get_sliced_feature control flow, restated: append, then test the stop
    condition with the pre-divided multiplier; centre uses int(i * 50 / fps)."""
    rows, i, mult = [], 0, 50.0 / fps
    while True:
        start = int(i * mult)
        centre = int(i * 50 / fps)
        rows.append([min(max(k, 0), n - 1) for k in range(centre - 2 * before, centre + 2 * (after + 1))])
        i += 1
        if start > n:
            break
    return rows


@pytest.mark.parametrize("fps", [24, 25, 30, 12, 60, 23.976, 29.97])
@pytest.mark.parametrize("n", [1, 2, 9, 10, 65, 150, 250, 1501, 3250])
def test_indices_match_official_loop(n, fps):
    ref = official_loop(n, fps)
    assert chunk_source_indices(n, fps).tolist() == ref
    assert chunk_count(n, fps) == len(ref)


def test_other_context_lengths():
    assert chunk_source_indices(40, 25, (1, 3)).tolist() == official_loop(40, 25, 1, 3)


def test_frame_chunks_token_order():
    feats = torch.arange(12 * 3 * 2, dtype=torch.float32).reshape(12, 3, 2)  # N=12, 3 states, width 2
    chunks = frame_chunks(feats, fps=25)
    idx = chunk_source_indices(12, 25)
    assert chunks.shape == (idx.shape[0], 30, 2)
    for frame in (0, 3, idx.shape[0] - 1):
        for token in range(30):  # token k = time step k // 3, state k % 3
            assert torch.equal(chunks[frame, token], feats[idx[frame, token // 3], token % 3])


def test_positions_and_counts():
    assert feature_positions(20800) == 65  # fixture clip: 130 mel frames
    assert feature_positions(16000 * 30) == 1500
    assert feature_positions(16000 * 31) == 1550
    assert feature_positions(16000 * 60 + 159) == 3000
    assert video_frame_count(1.3, 24) == 31 and audio_chunk_count(20800, 24) == 33
    assert video_frame_count(8.0, 25) == 200 and audio_chunk_count(128000, 25) == 202


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "24", None, True])
def test_bad_fps(bad):
    with pytest.raises(InputError, match="fps"):
        chunk_count(10, bad)
    with pytest.raises(InputError, match="fps"):
        video_frame_count(1.0, bad)


def test_no_positions():
    with pytest.raises(InputError, match="at least one"):
        chunk_source_indices(0, 24)
    with pytest.raises(InputError, match="duration"):
        video_frame_count(float("nan"), 24)
