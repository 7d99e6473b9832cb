"""The synthetic talking-figure dataset generator (train/synthetic.py)."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from train import synthetic as syn

FRAMES, SIZE = 36, 64


def _gen(root: Path, seed: int = 3, clips: int = 4, **kw) -> dict:
    return syn.generate_dataset(root, clips=clips, frames=FRAMES, size=SIZE, seed=seed, heldout_frac=0.25, **kw)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "data"
    _gen(root)
    return root


def _all_clip_dirs(root: Path) -> list[Path]:
    out = []
    for sub in (root, root / "heldout"):
        index = json.loads((sub / "dataset.json").read_text())
        out += [sub / "clips" / c for c in index["clips"]]
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_same_seed_gives_identical_files(dataset, tmp_path):
    again = tmp_path / "again"
    _gen(again)
    a, b = _files(dataset), _files(again)
    assert sorted(a) == sorted(b)
    diff = [k for k in a if a[k] != b[k]]
    assert not diff, f"files differ between two runs with the same seed: {diff[:5]}"


@pytest.mark.slow
def test_other_seed_differs(dataset, tmp_path):
    other = tmp_path / "other"
    _gen(other, seed=4)
    a, b = _files(dataset), _files(other)
    common = [k for k in a if k in b and k.endswith(".png")]
    assert sum(a[k] != b[k] for k in common) > len(common) // 2


@pytest.mark.slow
def test_refuses_non_empty_output(dataset):
    with pytest.raises(FileExistsError):
        _gen(dataset)


def test_split_is_deterministic_and_disjoint(dataset):
    train = json.loads((dataset / "dataset.json").read_text())
    held = json.loads((dataset / "heldout" / "dataset.json").read_text())
    assert train["format"] == held["format"] == syn.FORMAT
    assert train["heldout"] == "heldout"
    assert len(held["clips"]) == 1 and len(train["clips"]) == 3
    assert not set(train["clips"]) & set(held["clips"])
    assert syn.split_clips(4, 3, 0.25) == syn.split_clips(4, 3, 0.25)
    for c in held["clips"]:
        meta = json.loads((dataset / "heldout" / "clips" / c / "meta.json").read_text())
        src = meta["synthetic"]["audio_source"]
        assert meta["synthetic"]["heldout"] is True
        assert src == "synthetic" or any(n in src for n in syn.HELDOUT_SPEECH)
    for c in train["clips"]:
        src = json.loads((dataset / "clips" / c / "meta.json").read_text())["synthetic"]["audio_source"]
        assert not any(n in src for n in syn.HELDOUT_SPEECH)


def test_trainer_format(dataset):
    """Everything train/README.md (echomimic-v2-train/1) requires, with the documented shapes."""
    index = json.loads((dataset / "dataset.json").read_text())
    assert index["fps"] == 24 and index["sample_rate"] == 16000
    for d in _all_clip_dirs(dataset):
        meta = json.loads((d / "meta.json").read_text())
        assert meta["num_frames"] == FRAMES and meta["fps"] == 24
        assert meta["width"] == meta["height"] == SIZE
        assert meta["kind"] == "halfbody" and meta["content_box"] == [0.0, 0.0, 1.0, 1.0]
        frames = sorted((d / "frames").iterdir())
        assert [p.name for p in frames] == [f"{i:06d}.png" for i in range(FRAMES)]
        img = cv2.imread(str(frames[0]), cv2.IMREAD_UNCHANGED)
        assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
        with wave.open(str(d / "audio.wav")) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            assert w.getnframes() == FRAMES * 16000 // 24
        kp = np.load(d / "keypoints.npz", allow_pickle=False)
        shapes = {"bodies": (FRAMES, 18, 2), "bodies_score": (FRAMES, 18), "hands": (FRAMES, 2, 21, 2),
                  "hands_score": (FRAMES, 2, 21), "faces": (FRAMES, 68, 2), "faces_score": (FRAMES, 68)}
        for k, shp in shapes.items():
            assert kp[k].shape == shp and kp[k].dtype == np.float32, k
        # visible points inside the frame; missing ones are (-1, -1) with score 0
        assert kp["hands"].min() >= syn.HAND_MARGIN - 1e-6 and kp["hands"].max() <= 1 - syn.HAND_MARGIN + 1e-6
        assert kp["faces"].min() >= 0.0 and kp["faces"].max() <= 1.0
        vis = kp["bodies_score"] > 0.3
        assert vis[:, [0, 1, 2, 4, 5, 7, 14, 15, 16, 17]].all()  # elbows may leave the frame
        b = kp["bodies"][vis]
        assert b.min() >= 0.0 and b.max() <= 1.0
        missing = ~vis & (kp["bodies_score"] == 0)
        assert (kp["bodies"][missing] == -1).all()
        # wrists of the body are the hands' wrists (hand 0 = person's left = body 7)
        np.testing.assert_allclose(kp["bodies"][:, 7], kp["hands"][:, 0, 0])
        np.testing.assert_allclose(kp["bodies"][:, 4], kp["hands"][:, 1, 0])
        reg = np.load(d / "regions.npz", allow_pickle=False)
        assert reg["lips"].shape == (FRAMES, 4) and reg["head"].shape == (FRAMES, 4)
        assert reg["hands"].shape == (FRAMES, 2, 4)


def test_official_pose_files_load_with_safe_loader(dataset):
    pose = pytest.importorskip("echomimic_core.pose")
    d = _all_clip_dirs(dataset)[0]
    one = pose.safe_load_npy(d / "pose" / "0.npy")
    assert set(one) == {"bodies", "hands", "hands_score", "faces", "faces_score", "num", "draw_pose_params"}
    assert one["bodies"]["candidate"].shape == (18, 2) and one["bodies"]["subset"].shape == (1, 18)
    assert one["hands"].shape == (2, 21, 2) and one["faces"].shape == (1, 68, 2)
    assert one["draw_pose_params"] == [768, 768, 0, 768, 0, 768]
    seq = pose.load_pose_sequence(d / "pose")
    assert len(seq) == FRAMES
    kp = np.load(d / "keypoints.npz")
    for i in (0, FRAMES - 1):
        f = seq[i]
        assert f["num"] == i
        np.testing.assert_allclose(f["hands"], kp["hands"][i], atol=1e-6)
        np.testing.assert_allclose(f["faces"][0], kp["faces"][i], atol=1e-6)
        np.testing.assert_allclose(f["bodies"]["candidate"], kp["bodies"][i], atol=1e-6)
        # subset: index where score > 0.3, else -1 (official convention)
        sub = f["bodies"]["subset"][0]
        assert ((sub >= 0) == (f["bodies"]["score"][0] > 0.3)).all()


def test_hand_drawing_lands_on_the_drawn_hands(dataset):
    """The inference condition (hands-only drawer) drawn from the stored pose overlaps the figure's
    gloves: the pose map and the frames agree."""
    pose = pytest.importorskip("echomimic_core.pose")
    d = _all_clip_dirs(dataset)[0]
    meta = json.loads((d / "meta.json").read_text())
    glove = np.array(meta["synthetic"]["colors"]["glove_color"], np.float32)
    seq = pose.load_pose_sequence(d / "pose")
    for i in (0, FRAMES // 2):
        drawn = pose.draw_hands(seq[i], SIZE, SIZE)
        frame = cv2.cvtColor(cv2.imread(str(d / "frames" / f"{i:06d}.png")), cv2.COLOR_BGR2RGB)
        glove_mask = np.linalg.norm(frame.astype(np.float32) - glove, axis=-1) < 60
        pose_mask = drawn.max(-1) > 40
        assert glove_mask.sum() > 10 and pose_mask.sum() > 10
        near_glove = cv2.dilate(glove_mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert (pose_mask & near_glove).sum() / pose_mask.sum() > 0.8
        assert (glove_mask & pose_mask).sum() / glove_mask.sum() > 0.15


def test_lip_landmarks_describe_the_drawn_mouth(dataset):
    """Mouth-interior pixels lie inside the box of face points 60-67 (inner lip) grown by one pixel,
    and the inner-lip height follows the number of mouth pixels."""
    for d in _all_clip_dirs(dataset):
        meta = json.loads((d / "meta.json").read_text())
        mouth = np.array(meta["synthetic"]["colors"]["mouth_color"], np.float32)
        faces = np.load(d / "keypoints.npz")["faces"]
        for i in range(FRAMES):
            frame = cv2.cvtColor(cv2.imread(str(d / "frames" / f"{i:06d}.png")), cv2.COLOR_BGR2RGB)
            ys, xs = np.nonzero(np.linalg.norm(frame.astype(np.float32) - mouth, axis=-1) < 30)
            if len(xs) == 0:
                continue
            inner = faces[i, 60:68] * SIZE
            assert xs.min() >= inner[:, 0].min() - 1.5 and xs.max() + 1 <= inner[:, 0].max() + 1.5
            assert ys.min() >= inner[:, 1].min() - 1.5 and ys.max() + 1 <= inner[:, 1].max() + 1.5
            outer = faces[i, 48:60] * SIZE
            assert inner[:, 1].min() >= outer[:, 1].min() and inner[:, 1].max() <= outer[:, 1].max()


def test_mouth_opening_follows_audio_envelope(dataset):
    from bench.demo_quality import ClipData, mouth_box, mouth_opening, pearson

    checked = 0
    for d in _all_clip_dirs(dataset):
        clip = ClipData(d)
        env = clip.envelope()
        if env.std() < 0.05:  # (nearly) silent clip: nothing to correlate
            continue
        m = mouth_opening(clip.frames(), mouth_box(clip.faces), clip.mouth_rgb)
        r = pearson(m, env)
        assert r >= 0.8, f"{d.name}: mouth/envelope correlation {r:.3f}"
        checked += 1
    assert checked >= 2


def test_hands_in_frames_match_keypoints(dataset):
    from bench.demo_quality import ClipData, hand_centroids, hand_errors, hand_reference_points

    for d in _all_clip_dirs(dataset):
        clip = ClipData(d)
        targets = hand_reference_points(clip.hands)
        cents = hand_centroids(clip.frames(), clip.glove_rgb, targets)
        assert not np.isnan(cents).any()
        err = hand_errors(cents, targets, SIZE, SIZE)
        assert err.mean() <= 1.0 and err.max() <= 2.0, (d.name, err.mean(), err.max())


def test_envelope_levels():
    sr, n = 16000, 24
    t = np.arange(sr) / sr
    assert syn.speech_envelope(np.zeros(sr), sr, 24, n).max() == 0.0
    loud = 0.3 * np.sin(2 * np.pi * 200 * t)  # ~ -13 dBFS RMS
    env = syn.speech_envelope(loud, sr, 24, n)
    assert env[2:-2].min() == 1.0
    quiet = loud * 10 ** (-25 / 20)  # ~ -38 dBFS: partly open
    env = syn.speech_envelope(quiet, sr, 24, n)
    assert 0.2 < env[5] < 0.5


def test_synthetic_speech_has_syllables():
    rng = np.random.default_rng(0)
    x = syn.synth_speech_like(rng, 16000 * 3)
    assert x.dtype == np.float32 and len(x) == 48000 and 0.4 < np.abs(x).max() <= 0.5 + 1e-6
    env = syn.speech_envelope(x, num_frames=72)
    # both closed and open mouth frames, and many changes of direction (syllable rhythm)
    assert (env < 0.1).any() and (env > 0.6).any()
    assert (np.diff(np.sign(np.diff(env))) != 0).sum() >= 6


def test_cli_without_media(tmp_path):
    out = tmp_path / "cli"
    rc = syn.main([str(out), "--clips", "2", "--frames", "3", "--size", "32", "--seed", "1", "--media", "none",
                   "--quiet"])
    assert rc == 0
    index = json.loads((out / "dataset.json").read_text())
    assert index["synthetic"]["speech_sources"] == []
    assert len(index["clips"]) == 1
    assert (out / "heldout" / "dataset.json").is_file()


def test_rejects_bad_size(tmp_path):
    with pytest.raises(ValueError):
        syn.generate_dataset(tmp_path / "x", clips=1, frames=1, size=60)


def test_trainer_reads_the_dataset(dataset):
    data = pytest.importorskip("train.data")
    clips = data.list_clips([dataset])
    assert len(clips) == 3 and all(c.num_frames == FRAMES and c.width == SIZE for c in clips)
    ds = data.TrainDataset(clips, resolution=SIZE, clip_frames=1, pose_parts="hands", region="lips",
                           audio_features=lambda c: np.zeros((c.num_frames, 50, 384), np.float16))
    item = ds[0]
    assert tuple(item["target"].shape) == (3, 1, SIZE, SIZE)
    assert float(item["pose"].max()) > 0.5  # the hands are drawn
    region = item["region"][0].numpy()
    assert 0 < region.mean() < 0.2  # a lips box, not the whole frame


def test_lips_region_covers_the_open_mouth(dataset):
    for d in _all_clip_dirs(dataset):
        lips = np.load(d / "regions.npz")["lips"]
        faces = np.load(d / "keypoints.npz")["faces"]
        assert np.allclose(lips, lips[0])  # one box per clip
        pts = faces[:, 48:68]
        assert (pts[..., 0] >= lips[0, 0]).all() and (pts[..., 0] <= lips[0, 2]).all()
        assert (pts[..., 1] >= lips[0, 1]).all() and (pts[..., 1] <= lips[0, 3]).all()


def test_identities_and_heldout_figures(tmp_path):
    def colours(root, split):
        sub = root if split == "train" else root / "heldout"
        ids = json.loads((sub / "dataset.json").read_text())["clips"]
        return [json.dumps(json.loads((sub / "clips" / c / "meta.json").read_text())["synthetic"]["colors"],
                           sort_keys=True) for c in ids]

    kw = dict(clips=6, frames=2, size=32, seed=1, heldout_frac=0.34, identities=2, media_dir=None)
    syn.generate_dataset(tmp_path / "new", **kw)
    syn.generate_dataset(tmp_path / "shared", heldout_figures="shared", **kw)
    train = colours(tmp_path / "new", "train")
    assert len(set(train)) == 2  # two figures shared by four training clips
    assert not set(colours(tmp_path / "new", "heldout")) & set(train)
    assert set(colours(tmp_path / "shared", "heldout")) <= set(colours(tmp_path / "shared", "train"))
    with pytest.raises(ValueError):
        syn.generate_dataset(tmp_path / "bad", clips=2, frames=1, size=32, heldout_figures="shared", media_dir=None)
