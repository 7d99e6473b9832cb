"""Frame-based demo metrics (bench/demo_quality.py) on the synthetic ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from bench import demo_quality as dq
from train import synthetic as syn


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    root = tmp_path_factory.mktemp("synm") / "data"
    syn.generate_dataset(root, clips=6, frames=48, size=64, seed=11, heldout_frac=0.5)
    return root / "heldout"


@pytest.mark.slow
def test_ground_truth_scores_well_and_static_floor_does_not(heldout):
    table = dq.evaluate(heldout, {"gt": dq.source_ground_truth, "static": dq.source_static})
    gt, static = table["gt"], table["static"]
    assert gt["clips"] == 3
    assert gt["mouth_corr"] >= 0.8
    assert gt["hand_err_frac"] <= 0.02 and gt["hand_missing"] == 0.0
    # a model that copies the reference frame must fail both targets
    assert static["mouth_corr"] < 0.5
    assert static["hand_err_frac"] > 0.10
    text = dq.format_table(table)
    assert "gt" in text and "static" in text


@pytest.mark.slow
def test_unwired_rows_are_reported_not_raised(heldout):
    def boom(clip):
        raise NotImplementedError("not wired")

    table = dq.evaluate(heldout, {"model": boom}, max_clips=1)
    assert table["model"] == {"error": "not wired"}
    assert "n/a (not wired)" in dq.format_table(table)


def test_noise_frames_score_badly(heldout):
    rng = np.random.default_rng(0)

    def noise(clip):
        return rng.integers(0, 256, (clip.num_frames, clip.height, clip.width, 3), dtype=np.uint8)

    r = dq.evaluate(heldout, {"noise": noise})["noise"]
    assert abs(r["mouth_corr"]) < 0.5
    assert r["hand_err_frac"] > 0.10


def test_resized_frames_are_accepted(heldout):
    import cv2

    clip = dq.ClipData(dq.list_clips(heldout)[0])
    big = np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_LINEAR) for f in clip.frames()])
    r = dq.score_frames(big, clip)
    assert r["hand_err_frac"] <= 0.03
    assert r["frames"] == clip.num_frames


def test_pearson_and_missing_hand_penalty():
    assert dq.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert dq.pearson([1, 1, 1], [1, 2, 3]) == 0.0
    cents = np.array([[[np.nan, np.nan], [0.5, 0.5]]])
    targets = np.array([[[0.2, 0.2], [0.5, 0.6]]])
    err = dq.hand_errors(cents, targets, 64, 64)
    assert err[0, 0] == 32.0 and err[0, 1] == pytest.approx(6.4)


def test_hand_centroid_of_a_drawn_square():
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    frames[0, 10:14, 20:24] = (255, 0, 0)  # pixels 20..23 -> centre x = 22/64
    frames[0, 40:44, 40:44] = (255, 0, 0)
    guides = np.array([[[0.3, 0.2], [0.7, 0.7]]])
    c = dq.hand_centroids(frames, (255, 0, 0), guides)
    np.testing.assert_allclose(c[0, 0], [22 / 64, 12 / 64])
    np.testing.assert_allclose(c[0, 1], [42 / 64, 42 / 64])
    empty = dq.hand_centroids(np.zeros_like(frames), (255, 0, 0), guides)
    assert np.isnan(empty).all()


@pytest.mark.slow
def test_model_rows_run_the_pipeline_on_a_model_folder(tmp_path):
    """The model-based rows run end to end on the tiny random-weight fixture model (64x64)."""
    from support.paths import fixtures_dir

    weights = fixtures_dir() / "weights"
    if not (weights / "denoising_unet.pth").is_file():
        pytest.skip("fixture weights not available")
    pytest.importorskip("echomimic_core.pipeline")
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    root = tmp_path / "d"
    syn.generate_dataset(root, clips=2, frames=6, size=64, seed=9, heldout_frac=0.5, media_dir=None)
    src = dq.make_model_source(weights, random_init=True, steps=1, seed=0, guidance_scale=2.5)
    clip = dq.ClipData(dq.list_clips(root / "heldout")[0])
    frames = src(clip)
    assert frames.shape == (6, 64, 64, 3) and frames.dtype == np.uint8
    r = dq.score_frames(frames, clip)
    assert np.isfinite(r["mouth_corr"]) and np.isfinite(r["hand_err_px"])
