"""Audio features are cached by preprocessing (train/features.py for datasets made otherwise), sharded;
the real-data configs require them (data.audio_features: cached) with a message naming the command."""

from __future__ import annotations

import numpy as np
import pytest

from train import data as D
from train.features import cache_features, main, parse_shard
from train.phases import load_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sharded_feature_cache_covers_every_clip_once_and_matches_the_library(tmp_path, fixtures):
    enc_path = fixtures / "weights" / "audio_processor" / "tiny.pt"
    root = D.write_tiny_dataset(tmp_path / "ds", num_clips=3, num_frames=5, size=32, with_features=False)
    clips = D.list_clips([root])
    with pytest.raises(FileNotFoundError, match="train/features.py"):
        D.ensure_audio_features(clips, "cached", tmp_path / "cache", None)
    a = cache_features([root], str(enc_path), (0, 2), progress=False)
    b = cache_features([root], str(enc_path), (1, 2), progress=False)
    assert a["written"] + b["written"] == 3 and a["clips"] + b["clips"] == 3
    assert cache_features([root], str(enc_path), (0, 1), progress=False) == {"clips": 3, "written": 0, "present": 3}
    from echomimic_core.audio import load_audio_encoder

    enc = load_audio_encoder(str(enc_path))
    for c in clips:
        got = np.load(c.path / "audio_features.npy")
        assert got.dtype == np.float16 and got.shape[0] == c.num_frames
        assert np.array_equal(got, D.compute_audio_features(c.path / "audio.wav", enc, c.fps, c.num_frames))
    src = D.ensure_audio_features(clips, "cached", tmp_path / "cache", None)
    assert src(clips[0]).shape == np.load(clips[0].path / "audio_features.npy").shape
    assert main([str(root), "--audio-encoder", str(enc_path)]) == 0


def test_shard_parsing_and_config_defaults():
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) == (0, 1)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    assert load_config("stage1_1_initial_pose")["data"]["audio_features"] == "cached"
    assert load_config("stage2_temporal")["data"]["audio_features"] == "cached"
    assert load_config("demo_stage1b")["data"]["audio_features"] == "auto"  # the demo recipe computes them
