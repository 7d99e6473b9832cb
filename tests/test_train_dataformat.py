"""Compact clips (frames.mp4, train/clip_video.py) and sharded, streamed preprocessing: shards together
make the whole dataset, mp4 frames decode in any order to the same pixels, and training items from a
compact clip match the PNG clip's up to H.264's loss."""

from __future__ import annotations

import json

import numpy as np
import pytest

from support.preprocess import FakeExtractor, write_video as _write_video
from train import data as D
from train.clip_video import Mp4Frames, write_frames_mp4
from train.preprocess import preprocess

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mp4_frames_random_access_equals_sequential_decode(tmp_path):
    yy, xx = np.mgrid[0:64, 0:64]
    base = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8)  # smooth, like video
    frames = [np.roll(base, k, axis=1) for k in range(30)]
    assert write_frames_mp4(tmp_path / "f.mp4", iter(frames)) == 30  # a generator: written one at a time
    seq = Mp4Frames(tmp_path / "f.mp4")
    want = [seq.frame(k).copy() for k in range(30)]
    order = [29, 0, 17, 3, 3, 28, 12, 13, 14, 5]
    rnd = Mp4Frames(tmp_path / "f.mp4")
    for k in order:
        assert np.array_equal(rnd.frame(k), want[k]), k
    err = np.mean([np.abs(w.astype(int) - f.astype(int)).mean() for w, f in zip(want, frames)])
    assert err < 3  # crf 16 (and yuv420p) on smooth content
    import pickle

    assert np.array_equal(pickle.loads(pickle.dumps(rnd)).frame(4), want[4])
    with pytest.raises(ValueError, match="even"):
        write_frames_mp4(tmp_path / "odd.mp4", [np.zeros((5, 6, 3), np.uint8)])


def test_sharded_mp4_preprocessing_matches_the_png_dataset(tmp_path, fixtures):
    from echomimic_core.audio import load_audio_encoder

    vids = tmp_path / "videos"
    vids.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        _write_video(vids / name, with_audio=True)
    enc = load_audio_encoder(fixtures / "weights" / "audio_processor" / "tiny.pt")
    out = tmp_path / "mp4"
    quiet = lambda *_: None  # noqa: E731
    r0 = preprocess(vids, out, FakeExtractor(), audio_encoder=enc, resolution=64, image_ext=".mp4", log=quiet,
                    shard=(0, 2))
    r1 = preprocess(vids, out, FakeExtractor(), audio_encoder=enc, resolution=64, image_ext=".mp4", log=quiet,
                    shard=(1, 2))
    assert sorted(r0["done"] + r1["done"]) == ["a.mp4", "b.mp4", "c.mp4"] and not set(r0["done"]) & set(r1["done"])
    assert not (out / "dataset.json").exists() and len(D.list_clips([out])) == 3  # shards write no index
    r = preprocess(vids, out, FakeExtractor(), audio_encoder=enc, resolution=64, image_ext=".mp4", log=quiet)
    assert len(r["skipped"]) == 3 and len(json.loads((out / "dataset.json").read_text())["clips"]) == 3

    png = tmp_path / "png"
    preprocess(vids, png, FakeExtractor(), audio_encoder=enc, resolution=64, log=quiet)
    cm, cp = D.list_clips([out])[0], D.list_clips([png])[0]
    assert (cm.path / "frames.mp4").is_file() and not (cm.path / "frames").exists()
    assert cm.num_frames == cp.num_frames
    assert np.array_equal(np.load(cm.path / "audio_features.npy"), np.load(cp.path / "audio_features.npy"))
    with np.load(cm.path / "keypoints.npz") as a, np.load(cp.path / "keypoints.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in D.KP_ARRAYS)
    dm = D.TrainDataset([cm], resolution=64, clip_frames=4, seed=1)
    dp = D.TrainDataset([cp], resolution=64, clip_frames=4, seed=1)
    for n in range(3):
        a, b = dm[n], dp[n]
        assert (a["pose"] == b["pose"]).all() and (a["audio"] == b["audio"]).all()
        assert (a["target"] - b["target"]).abs().mean() < 0.03  # H.264 crf 16 vs PNG, in [-1, 1] units
