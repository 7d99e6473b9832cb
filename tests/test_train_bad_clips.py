"""One damaged clip must not stop training: it is skipped, recorded in the run folder and the sample is
drawn again deterministically; past data.max_bad_fraction the run stops with one line."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from train import data as D
from train.bad_clips import BadClips, TooManyBadClips

pytestmark = pytest.mark.usefixtures("one_thread")


def _damaged_dataset(root):
    D.write_tiny_dataset(root, num_clips=6, num_frames=6, size=32, tokens=20)
    clips = sorted((root / "clips").iterdir())
    (clips[0] / "keypoints.npz").write_bytes(b"not a zip")        # corrupt keypoints
    frames = sorted((clips[1] / "frames").iterdir())
    if frames:
        frames[2].write_bytes(b"\x89PNG broken")                   # a corrupt frame
    else:
        (clips[1] / "frames.mp4").write_bytes(b"broken")
    (clips[2] / "meta.json").write_text("{ not json")             # damaged meta.json
    return clips


def _cfg(root, fraction):
    return {"roots": [str(root)], "kinds": ["halfbody"], "clip_frames": 1, "max_bad_fraction": fraction}


def test_damaged_clips_are_skipped_recorded_and_deterministic(tmp_path):
    clips = _damaged_dataset(tmp_path / "ds")
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="skipping damaged training clip"):
        good, bad = D.training_clips(_cfg(tmp_path / "ds", 0.6), run)
        assert len(good) == 5 and bad.num_clips == 6
        ds = D.TrainDataset(good, resolution=32, seed=3, bad_clips=bad)
        items = [ds[n] for n in range(24)]
    assert all(item["target"].shape == (3, 1, 32, 32) for item in items)
    assert [int(item["sample"]) for item in items] == list(range(24))
    lines = [json.loads(line) for line in (run / "bad_clips.jsonl").read_text().splitlines()]
    assert sorted(line["clip"] for line in lines) == sorted(str(c) for c in clips[:3])
    assert any("keypoints.npz" in line["error"] or str(clips[0]) in line["error"] for line in lines)
    assert any("meta.json" in line["error"] for line in lines)
    # a fresh process (resume) draws the same samples without knowing which clips are bad
    again = D.TrainDataset(good, resolution=32, seed=3, bad_clips=BadClips(len(good), 0.6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in range(0, 24, 3):
            item = again[n]
            assert [k for k in item if not torch.equal(item[k], items[n][k])] == [], n


def test_too_many_damaged_clips_stop_with_one_line(tmp_path):
    _damaged_dataset(tmp_path / "ds")
    with pytest.warns(UserWarning), pytest.raises(TooManyBadClips, match=r"data.max_bad_fraction = 0.1 \(see "):
        good, bad = D.training_clips(_cfg(tmp_path / "ds", 0.1), tmp_path / "run")
        ds = D.TrainDataset(good, resolution=32, seed=3, bad_clips=bad)
        for n in range(24):
            ds[n]
    with pytest.raises(ValueError, match="max_bad_fraction"):
        BadClips(3, max_fraction=2.0)
