"""Reference<->target gap and the per-sample crop augmentation (train/augment.py): the crop is the same
for reference, targets, pose map and masks, keypoints follow the pixels, seeded per sample, and the
real-data configs turn both on while the demo configs keep them off."""

from __future__ import annotations

import numpy as np
import pytest

from train import augment as A
from train import data as D
from train.phases import load_config

pytestmark = pytest.mark.usefixtures("one_thread")
S = 64


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = D.write_tiny_dataset(tmp_path_factory.mktemp("aug_ds"), num_clips=2, num_frames=30, size=S, tokens=4)
    return D.list_clips([root])


def test_min_ref_gap_holds_for_every_sample_and_falls_back_to_the_farthest_frame(clips):
    ds = D.TrainDataset(clips, resolution=S, min_ref_gap=10, seed=3)
    refs = set()
    for n in range(200):
        _, frames, ref = ds.locate(n)
        assert abs(ref - frames[0]) >= 10
        refs.add(ref)
    assert len(refs) > 15  # still spread over the clip
    s2 = D.TrainDataset(clips, resolution=S, clip_frames=8, min_ref_gap=5, seed=3)
    for n in range(50):
        _, frames, ref = s2.locate(n)
        assert min(abs(ref - f) for f in frames) >= 5
    rng = np.random.default_rng(0)
    assert A.reference_frame(rng, 10, [4], 20) == 9       # no frame is 20 away: the farthest one
    assert A.reference_frame(rng, 10, list(range(10)), 1) == 0


def test_crop_is_consistent_across_reference_target_pose_and_masks(clips):
    aug = {"prob": 1.0, "scale": [0.6, 0.6]}
    ds = D.TrainDataset(clips, resolution=S, pose_parts="init", region="head", augment=aug, seed=5)
    plain = D.TrainDataset(clips, resolution=S, pose_parts="init", region="head", seed=5)
    checked = 0
    for n in range(6):
        item, base = ds[n], plain[n]
        clip, frames, ref = ds.locate(n)
        box = A.crop_box(5, n, A.check_augment(aug))
        assert box is not None and np.isclose(box[2] - box[0], 0.6)
        # pixels: the box of the full frame resized, for the reference and the target alike
        for img, idx in ((item["ref"], ref), (item["target"][:, 0], frames[0])):
            want = D.load_frame(clip, idx, S, box)
            got = ((img.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
            assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
        # keypoints follow the pixels: the nose lands on the head disc's colour in the cropped target
        kp = D.TrainDataset(clips, resolution=S)._keypoints(clip)
        nose = kp["bodies"][frames[0], 14]  # an eye: inside the head disc, away from the mouth
        moved = A.crop_keypoints(kp, frames, box)["bodies"][0, 14]
        if moved[0] < 0:
            continue  # nose cropped away
        px = lambda p: (min(S - 1, int(p[1] * S)), min(S - 1, int(p[0] * S)))  # noqa: E731
        y, x = px(moved)
        y0, x0 = px(nose)
        tgt = item["target"][:, 0, y, x]
        assert (tgt - base["target"][:, 0, y0, x0]).abs().max() < 0.05
        # the pose map is drawn from the moved keypoints; the head mask covers the moved nose
        assert item["pose"][:, 0, max(0, y - 2):y + 3, max(0, x - 2):x + 3].sum() > 0
        assert item["region"][0, y, x] == 1 and not np.array_equal(item["region"].numpy(), base["region"].numpy())
        checked += 1
    assert checked >= 3


def test_out_of_crop_points_become_missing_and_boxes_clip():
    kp = D.empty_keypoints(1)
    kp["bodies"][0, 0] = (0.05, 0.05)
    kp["bodies_score"][0, 0] = 0.9
    kp["bodies"][0, 1] = (0.5, 0.5)
    kp["bodies_score"][0, 1] = 0.9
    out = A.crop_keypoints(kp, [0], np.array([0.25, 0.25, 0.75, 0.75]))
    assert (out["bodies"][0, 0] == -1).all() and out["bodies_score"][0, 0] == 0
    assert np.allclose(out["bodies"][0, 1], (0.5, 0.5)) and np.isclose(out["bodies_score"][0, 1], 0.9)
    assert (out["bodies"][0, 2] == -1).all()  # missing stays missing
    b = A.crop_boxes(np.array([[0.0, 0.0, 0.5, 0.5], [-1, -1, -1, -1], [0.0, 0.0, 0.1, 0.1]]),
                     np.array([0.25, 0.25, 0.75, 0.75]))
    assert np.allclose(b[0], (0, 0, 0.5, 0.5)) and (b[1] == -1).all() and (b[2] == -1).all()


def test_augmentation_is_seeded_per_sample_and_off_by_default(clips):
    aug = {"prob": 0.5, "scale": [0.7, 1.0]}
    a = D.TrainDataset(clips, resolution=S, augment=aug, seed=1)
    b = D.TrainDataset(clips, resolution=S, augment=aug, seed=1)
    for n in range(4):
        assert all((a[n][k] == b[n][k]).all() for k in ("ref", "target", "pose"))
    boxes = [A.crop_box(1, n, A.check_augment(aug)) for n in range(100)]
    assert 30 < sum(x is not None for x in boxes) < 70
    off = D.TrainDataset(clips, resolution=S, seed=1)
    legacy = D.TrainDataset(clips, resolution=S, seed=1, augment={"prob": 0.0}, min_ref_gap=None)
    assert all((off[n]["target"] == legacy[n]["target"]).all() for n in range(3))
    with pytest.raises(ValueError, match="augment.scale"):
        A.check_augment({"prob": 1, "scale": [0.9, 1.2]})


def test_real_data_configs_turn_gap_and_crop_on_demo_configs_off():
    for name in ("stage1_1_initial_pose", "stage1_3_lips", "stage1_4a_head_headshot", "stage1_5_hands_global",
                 "stage2_temporal", "finetune_official"):
        d = load_config(name)["data"]
        assert d["min_ref_gap"] >= 1 and d["augment"]["prob"] > 0, name
    for name in ("demo_stage1", "demo_stage1b", "demo_stage1c", "demo_stage2"):
        d = load_config(name)["data"]
        assert d["min_ref_gap"] is None and d["augment"]["prob"] == 0, name
    with pytest.raises(ValueError, match="min_ref_gap"):
        load_config("stage1_1_initial_pose", ["data.min_ref_gap=-2"])
