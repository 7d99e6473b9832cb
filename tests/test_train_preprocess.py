"""train/preprocess.py: mp4 files → training dataset (24 fps, crop, keypoints, regions, cached whisper
windows), bad clips reported, reruns resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from train import data as D
from train.preprocess import iter_frames_24, preprocess

from support.preprocess import FakeExtractor, nose as _nose, write_video as _write_video  # noqa: F401

W, H, SRC_FPS, N_SRC = 96, 80, 30, 24
N24 = 20  # frames k with k/24 < 24/30 s








@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    _write_video(d / "good.mp4", with_audio=True)
    (d / "sub").mkdir()
    _write_video(d / "sub" / "silent.mp4", with_audio=False)
    (d / "broken.mp4").write_bytes(b"\x00not a video" * 50)
    return d


def test_frames_resampled_to_24fps(videos):
    frames = list(iter_frames_24(videos / "good.mp4"))
    assert len(frames) == N24
    assert frames[0].shape == (H, W, 3)


def test_preprocess_builds_a_dataset_and_resumes(videos, tmp_path, fixtures):
    from echomimic_core.audio import load_audio_encoder

    enc = load_audio_encoder(fixtures / "weights" / "audio_processor" / "tiny.pt")
    out = tmp_path / "ds"
    logs = []
    r = preprocess(videos, out, FakeExtractor(), audio_encoder=enc, resolution=64, log=logs.append)
    assert r["done"] == ["good.mp4"]
    assert set(r["bad"]) == {"broken.mp4", "sub/silent.mp4"} and "audio" in r["bad"]["sub/silent.mp4"]
    assert json.loads((out / "bad_clips.json").read_text()).keys() == r["bad"].keys()
    idx = json.loads((out / "dataset.json").read_text())
    assert idx["format"] == D.FORMAT and len(idx["clips"]) == 1

    clips = D.list_clips([out])
    c = clips[0]
    assert c.num_frames == N24 and (c.width, c.height) == (64, 64)
    feats = np.load(c.path / "audio_features.npy")
    assert feats.shape == (c.num_frames, 20, 384) and feats.dtype == np.float16
    with np.load(c.path / "keypoints.npz") as z:
        kp = {k: z[k] for k in z.files}
    with np.load(c.path / "regions.npz") as z:
        assert z["lips"].shape == (c.num_frames, 4) and z["head"].shape == (c.num_frames, 4)
    # the nose keypoint lands on the white square in the stored (cropped, resized) frame
    for i in (0, c.num_frames - 1):
        img = D.load_frame(c, i, 64)
        x, y = kp["bodies"][i, 0]
        assert img[int(y * 64), int(x * 64)].max() > 150, (i, x, y)
    ds = D.TrainDataset(clips, resolution=64, pose_parts="no_lips", region="lips")
    item = ds[0]
    assert item["audio"].shape == (1, 20, 384) and item["region"].sum() > 0

    r2 = preprocess(videos, out, FakeExtractor(), audio_encoder=enc, resolution=64, log=logs.append)
    assert r2["done"] == [] and len(r2["skipped"]) == 3


def test_headshot_clips_are_padded_to_the_halfbody_layout(videos, tmp_path):
    import shutil

    src = tmp_path / "heads"
    src.mkdir()
    shutil.copy(videos / "good.mp4", src / "talk.mp4")
    out = tmp_path / "ds"
    r = preprocess(src, out, FakeExtractor(face_scale=3.0), resolution=64, kind="headshot", log=lambda *_: None)
    assert r["done"] == ["talk.mp4"]
    c = D.list_clips([out], kinds=["headshot"])[0]
    x0, y0, x1, y1 = c.content_box
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and (x1 - x0) * (y1 - y0) < 0.99  # padding exists
    with np.load(c.path / "keypoints.npz") as z:
        face = z["faces"][0]
        nose = z["bodies"][0, 0]
    fy = face[:, 1]
    assert abs((fy.max() - fy.min()) - 0.26) < 0.05 and abs(np.median(face[:, 0]) - 0.5) < 0.05
    img = D.load_frame(c, 0, 64)
    assert img[int(nose[1] * 64), int(nose[0] * 64)].max() > 120
    assert not (out / "clips" / c.clip_id / "audio_features.npy").exists()  # no encoder given: trainer computes
