"""train/preprocess.py: mp4 files → training dataset (24 fps, crop, keypoints, regions, cached whisper
windows), bad clips reported, reruns resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from train import data as D
from train.preprocess import iter_frames_24, preprocess

W, H, SRC_FPS, N_SRC = 96, 80, 30, 24
N24 = 20  # frames k with k/24 < 24/30 s


def _nose(k: int) -> tuple[float, float]:
    return 0.5 + 0.1 * np.sin(k / 5), 0.3


def _write_video(path: Path, with_audio: bool) -> None:
    import av

    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=SRC_FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        a_s = c.add_stream("aac", rate=16000) if with_audio else None
        if a_s is not None:
            a_s.layout = "mono"
        for k in range(N_SRC):
            img = np.full((H, W, 3), 40, np.uint8)
            x, y = _nose(k)
            img[int(y * H) - 2:int(y * H) + 3, int(x * W) - 2:int(x * W) + 3] = 255
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if a_s is not None:
            t = np.arange(int(16000 * N_SRC / SRC_FPS)) / 16000
            pcm = (0.3 * np.sin(2 * np.pi * 330 * t) * 32767).astype(np.int16)[None]
            for i in range(0, pcm.shape[1], 1024):
                fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + 1024]), format="s16", layout="mono")
                fr.sample_rate = 16000
                for p in a_s.encode(fr):
                    c.mux(p)
            for p in a_s.encode():
                c.mux(p)


class FakeExtractor:
    """Stands in for DWPose: one person whose nose follows the white square of the test video."""

    def __init__(self, face_scale: float = 1.0):
        self.face_scale = face_scale

    def __call__(self, img):
        ys, xs = np.nonzero(img[..., 0] > 200)
        x, y = (xs.mean() + 0.5) / img.shape[1], (ys.mean() + 0.5) / img.shape[0]
        body = np.array([[x, y], [x, y + 0.25], [x - 0.15, y + 0.25], [x - 0.2, y + 0.45], [x - 0.2, y + 0.6],
                         [x + 0.15, y + 0.25], [x + 0.2, y + 0.45], [x + 0.2, y + 0.6]] + [[-1, -1]] * 6
                        + [[x - 0.02, y - 0.02], [x + 0.02, y - 0.02], [x - 0.05, y], [x + 0.05, y]])
        subset = np.array([[float(i) if (i < 8 or i >= 14) else -1.0 for i in range(18)]])
        t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
        fs = self.face_scale
        face = np.stack([x + 0.05 * fs * np.cos(t), y - 0.04 + 0.08 * fs * np.sin(t)], -1)[None]
        hands = np.stack([np.stack([np.full(21, x - 0.2), np.linspace(0.85, 0.95, 21)], -1),
                          np.stack([np.full(21, x + 0.2), np.linspace(0.85, 0.95, 21)], -1)])
        return {"bodies": {"candidate": body, "subset": subset, "score": (subset >= 0).astype(float)},
                "hands": hands, "hands_score": np.ones((2, 21)), "faces": face, "faces_score": np.ones((1, 68))}


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
