"""Training data: deterministic sampling, process sharding, pose conditions and region masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from train import data as D


@pytest.fixture(scope="module")
def ds_root(tmp_path_factory):
    return D.write_tiny_dataset(tmp_path_factory.mktemp("ds"), num_clips=3, num_frames=8, size=64, tokens=20,
                                kinds=("halfbody", "headshot", "halfbody"))


def test_sampler_shards_the_one_process_stream():
    one = list(itertools.islice(iter(D.StepSampler(4, 1, 0, 2, start_step=3)), 16))
    r0 = list(itertools.islice(iter(D.StepSampler(2, 2, 0, 2, start_step=3)), 8))
    r1 = list(itertools.islice(iter(D.StepSampler(2, 2, 1, 2, start_step=3)), 8))
    # per micro-batch, rank 0 takes the first half of the global batch and rank 1 the second
    for m in range(4):
        assert one[4 * m:4 * m + 4] == r0[2 * m:2 * m + 2] + r1[2 * m:2 * m + 2]
    assert one[0] == 3 * 2 * 4  # resuming at step 3 starts at sample 24
    fixed = list(itertools.islice(iter(D.StepSampler(2, 1, 0, 1, start_step=5, fixed=True)), 6))
    assert fixed == [0, 1] * 3


def test_items_are_a_function_of_the_sample_number(ds_root):
    clips = D.list_clips([ds_root])
    assert {c.kind for c in clips} == {"halfbody", "headshot"}
    assert [c.clip_id for c in D.list_clips([ds_root], kinds=["headshot"])] == ["clip_0001"]
    a = D.TrainDataset(clips, resolution=32, pose_parts="init", seed=1)
    b = D.TrainDataset(clips, resolution=32, pose_parts="init", seed=1)
    for n in (0, 5, 17):
        x, y = a[n], b[n]
        assert all(torch.equal(x[k], y[k]) for k in x)
        clip, frames, ref = a.locate(n)
        assert ref != frames[0]
    # each epoch visits every clip once
    assert sorted(a.locate(n)[0].clip_id for n in range(3)) == sorted(c.clip_id for c in clips)
    s2 = D.TrainDataset(clips, resolution=32, clip_frames=4, frame_stride=2, pose_parts="hands")
    clip, frames, _ = s2.locate(7)
    assert np.diff(frames).tolist() == [2, 2, 2] and frames[-1] < clip.num_frames
    item = s2[7]
    assert item["target"].shape == (3, 4, 32, 32) and item["pose"].shape == (3, 4, 32, 32)
    assert item["audio"].shape == (4, 20, 384)


def test_pose_conditions_and_region_masks(ds_root):
    clips = D.list_clips([ds_root], kinds=["halfbody"])
    full = D.TrainDataset(clips, resolution=64, pose_parts="init", region="lips")[0]
    nolips = D.TrainDataset(clips, resolution=64, pose_parts="no_lips", region="lips")[0]
    hands = D.TrainDataset(clips, resolution=64, pose_parts="hands", region="head")[0]
    lips = full["region"][0] > 0
    assert lips.any() and not lips.all()
    diff = (full["pose"] - nolips["pose"]).abs().sum(0)[0]
    assert diff.sum() > 0 and diff[~lips].sum() < 0.2 * diff.sum()  # only the mouth area changes
    assert hands["pose"].sum() < nolips["pose"].sum()  # hands only: no body sticks, no face
    head = hands["region"][0] > 0
    assert head.sum() > lips.sum()
    # headshot clips: the mask is cut to the content box (padding excluded)
    hs = D.list_clips([ds_root], kinds=["headshot"])
    item = D.TrainDataset(hs, resolution=64, pose_parts="no_head", region="head")[0]
    x0, y0, x1, y1 = hs[0].content_box
    m = item["region"][0]
    assert m[:, : int(x0 * 64) - 1].sum() == 0 and m[int(y1 * 64) + 1:, :].sum() == 0
    # no region: ones
    assert D.TrainDataset(clips, resolution=64, region=None)[0]["region"].min() == 1


def test_write_clip_checks_shapes(tmp_path):
    kp = D.empty_keypoints(2)
    kp["hands"] = np.zeros((2, 21, 2))
    with pytest.raises(ValueError, match="hands"):
        D.write_clip(tmp_path, "x", [np.zeros((8, 8, 3), np.uint8)] * 2, np.zeros(1000), kp)


def test_same_clip_ids_in_two_roots_stay_apart(tmp_path):
    """Two data roots may both hold a ``clip_0000``: keypoints, regions and audio are cached per clip
    folder, so each clip keeps its own (a per-id cache handed one root's arrays to the other)."""
    roots = [D.write_tiny_dataset(tmp_path / name, num_clips=1, num_frames=8 + 4 * k, size=64, tokens=20, seed=k)
             for k, name in enumerate(("a", "b"))]
    clips = D.list_clips(roots)
    assert [c.clip_id for c in clips] == ["clip_0000", "clip_0000"]
    ds = D.TrainDataset(clips, resolution=32, pose_parts="init", seed=0)
    for clip in clips:
        with np.load(clip.path / "keypoints.npz") as z:
            expected = {k: z[k] for k in z.files}
        got = ds._keypoints(clip)
        assert all(np.array_equal(got[k], expected[k]) for k in got)
        assert ds._audio(clip).shape[0] == clip.num_frames


def test_hue_rotation_turns_reference_and_targets_together(ds_root):
    # a third of a turn about the grey axis maps red to green to blue and keeps greys
    rot = D.hue_rotation_matrix(2 * np.pi / 3)
    rgb = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [0.2, 0.2, 0.2]]).T.reshape(3, 3, 1)
    out = D.rotate_colours(rgb, rot).reshape(3, 3).T
    assert torch.allclose(out, torch.tensor([[-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [0.2, 0.2, 0.2]]), atol=1e-6)
    assert torch.allclose(D.hue_rotation_matrix(0.0), torch.eye(3))

    clips = D.list_clips([ds_root], kinds=["halfbody"])
    plain = D.TrainDataset(clips, resolution=32, clip_frames=2, pose_parts="hands", seed=3)
    always = D.TrainDataset(clips, resolution=32, clip_frames=2, pose_parts="hands", seed=3, hue_rotation=1.0)
    for n in range(4):
        a, b = plain[n], always[n]
        # the same seeded angle for the reference and every target frame; pose/audio untouched
        angle = D.rng_of(3, "hue", n)
        angle.random()
        rot = D.hue_rotation_matrix(angle.uniform(0.0, 2.0 * np.pi))
        assert torch.allclose(b["ref"], D.rotate_colours(a["ref"], rot))
        assert torch.allclose(b["target"], D.rotate_colours(a["target"], rot))
        assert not torch.allclose(a["ref"], b["ref"])
        assert torch.equal(a["pose"], b["pose"]) and torch.equal(a["audio"], b["audio"])
        assert torch.equal(always[n]["ref"], b["ref"])  # deterministic per sample number
    with pytest.raises(ValueError, match="hue_rotation"):
        D.TrainDataset(clips, resolution=32, hue_rotation=1.5)
