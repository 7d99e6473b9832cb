"""Context-window schedule parity against <fixtures>/pipeline/pipeline.json."""

from __future__ import annotations

import json

import pytest

from echomimic_core.errors import InputError
from echomimic_core.sampling import uniform_windows, window_schedule


def _runs(fixtures):
    meta = json.loads((fixtures / "pipeline" / "pipeline.json").read_text())
    return meta["call"], {k: v for k, v in meta.items() if isinstance(v, dict) and "windows_per_step" in v}


def test_windows_match_every_step_of_every_run(fixtures):
    call, runs = _runs(fixtures)
    assert runs
    for name, run in runs.items():
        length = run["latent_shape"][2]
        assert length == call["video_length"]
        assert uniform_windows(length, call["context_frames"], call["context_overlap"]) == run["context_queue"], name
        ours = window_schedule(length, len(run["timesteps"]), call["context_frames"], call["context_overlap"])
        assert ours == run["windows_per_step"], name


def test_documented_examples():
    assert uniform_windows(20, 12, 3) == [list(range(12)), list(range(9, 20)) + [0], [18, 19] + list(range(10))]
    w120 = uniform_windows(120, 12, 3)
    assert len(w120) == 14 and w120[-1] == [117, 118, 119] + list(range(9))
    # short videos: one window, rotated by 3 per step (wrapped order kept)
    sched = window_schedule(5, 3, 12, 3)
    assert sched[0] == [[0, 1, 2, 3, 4]] and sched[1] == [[3, 4, 0, 1, 2]] and sched[2] == [[1, 2, 3, 4, 0]]


@pytest.mark.parametrize("length", [1, 7, 12, 13, 21, 50, 121])
def test_every_frame_covered_and_no_window_repeats_a_frame(length):
    for step in window_schedule(length, 4, 12, 3):
        covered = set()
        for window in step:
            assert len(window) == min(length, 12) and len(set(window)) == len(window)
            covered.update(window)
        assert covered == set(range(length))


@pytest.mark.parametrize("size,overlap,length", [(0, 0, 5), (12, 12, 30), (12, -1, 30), (12, 3, 0)])
def test_bad_arguments(size, overlap, length):
    with pytest.raises(InputError):
        uniform_windows(length, size, overlap)
