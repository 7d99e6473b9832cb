"""Pose drawing: pixel parity with the official drawer (fixture level d), sizes, full drawer parts."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from echomimic_core.errors import InputError
from echomimic_core.pose import (POSE_CONDITIONS, draw_full_pose, draw_hands, draw_pose_select_v2,
                                 load_pose_sequence, render_frames, safe_load_npy, scale_draw_params)


def _png_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _cases(fixtures: Path):
    folder = fixtures / "pose_drawing"
    meta = json.loads((folder / "pose_drawing.json").read_text())
    return folder, meta


def _report(name: str, got: np.ndarray, ref: np.ndarray) -> tuple[int, int]:
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    n = int((diff.max(axis=-1) > 0).sum())
    print(f"{name}: max diff {int(diff.max())}, pixels differing {n} of {diff.shape[0] * diff.shape[1]}")
    return int(diff.max()), n


def test_inference_drawing_matches_fixture(fixtures: Path):
    folder, meta = _cases(fixtures)
    ref_w = int(meta.get("ref_w", 800))
    assert meta["frames"]
    for case in meta["frames"]:
        frame = safe_load_npy(folder / case["npy"])
        params = case.get("draw_pose_params", frame.get("draw_pose_params"))
        # infer.py: zero canvas of the output size, draw at (imh, imw), paste at [rb:re, cb:ce]
        ref = _png_rgb(folder / case["infer768_png"])
        got = draw_hands(frame, ref.shape[0], ref.shape[1], params, ref_w=ref_w)
        assert got.shape == ref.shape and got.dtype == np.uint8
        max_diff, n_diff = _report(case["infer768_png"], got, ref)
        assert max_diff == 0 and n_diff == 0
        if "nonzero_pixels_768" in case:
            assert int((got.max(-1) > 0).sum()) == case["nonzero_pixels_768"]
        # the drawing function called directly at the small size
        ref = _png_rgb(folder / case["small_png"])
        got = draw_pose_select_v2(frame, ref.shape[0], ref.shape[1], ref_w=ref_w)
        max_diff, n_diff = _report(case["small_png"], got, ref)
        assert max_diff == 0 and n_diff == 0
        if "nonzero_pixels_small" in case:
            assert int((got.max(-1) > 0).sum()) == case["nonzero_pixels_small"]
        # full-canvas params scaled to the small size = the direct drawing
        if tuple(params) == (768, 768, 0, 768, 0, 768):
            assert np.array_equal(draw_hands(frame, ref.shape[0], ref.shape[1], params, ref_w=ref_w), got)


def test_hsv_ramp_matches_matplotlib():
    mcolors = pytest.importorskip("matplotlib.colors")
    from echomimic_core.pose.draw import _HAND_EDGE_RGB

    for ie, rgb in enumerate(_HAND_EDGE_RGB):
        assert np.array_equal(np.array(rgb), mcolors.hsv_to_rgb([ie / 20.0, 1.0, 1.0]))


def test_scale_draw_params():
    assert scale_draw_params([768, 768, 0, 768, 0, 768], 64, 64) == (64, 64, 0, 64, 0, 64)
    assert scale_draw_params([768, 768, 0, 768, 0, 768], 512, 768) == (512, 768, 0, 512, 0, 768)
    imh, imw, rb, re, cb, ce = scale_draw_params([768, 500, 0, 768, 134, 634], 512, 512)
    assert (re - rb, ce - cb) == (imh, imw) and ce <= 512 and abs(imw - 500 * 512 / 768) <= 1
    with pytest.raises(InputError):
        scale_draw_params([768, 768, 0, 700, 0, 768], 64, 64)


def test_non_square_and_crop_params(media: Path):
    seq = load_pose_sequence(media / "pose" / "01")
    frame = seq[0]
    img = draw_hands(frame, 512, 384)
    assert img.shape == (512, 384, 3) and img.any()
    assert np.array_equal(img, draw_pose_select_v2(frame, 512, 384))
    # a crop: the drawing lands only inside the paste box
    img = draw_hands(frame, 768, 768, [768, 500, 0, 768, 134, 634])
    assert not img[:, :134].any() and not img[:, 634:].any() and img[:, 134:634].any()
    assert np.array_equal(img[:, 134:634], draw_pose_select_v2(frame, 768, 500))


def test_render_frames_only_requested(media: Path):
    seq = load_pose_sequence(media / "pose" / "fight")
    out = render_frames(seq, [5, 0, 5], 64, 96)
    assert out.shape == (3, 64, 96, 3) and out.dtype == np.uint8
    assert np.array_equal(out[0], draw_hands(seq[5], 64, 96))
    assert np.array_equal(out[0], out[2])
    assert render_frames(seq, [], 64, 64).shape == (0, 64, 64, 3)
    with pytest.raises(InputError):
        render_frames(seq, [len(seq)], 64, 64)
    full = render_frames(seq, [1], 64, 64, parts="init")
    assert np.array_equal(full[0], draw_full_pose(seq[1], 64, 64, "init"))


def test_full_pose_parts(media: Path):
    frame = load_pose_sequence(media / "pose" / "01")[0]
    H = W = 256
    full = draw_full_pose(frame, H, W, "init")
    hands = draw_full_pose(frame, H, W, "hands")
    assert np.array_equal(hands, draw_hands(frame, H, W))  # P^hands = the inference condition
    no_lips = draw_full_pose(frame, H, W, "no_lips")
    no_head = draw_full_pose(frame, H, W, "no_head")
    nz = lambda im: int((im.max(-1) > 0).sum())  # noqa: E731
    assert nz(full) > nz(no_lips) > nz(no_head) > nz(hands) > 0
    # lips region (mouth landmarks) lit only when lips are drawn
    mouth = frame["faces"][0, 48:68]
    x0, y0 = (mouth.min(0) * [W, H]).astype(int)
    x1, y1 = (mouth.max(0) * [W, H]).astype(int)
    assert full[y0:y1 + 1, x0:x1 + 1].any()
    diff = np.abs(full.astype(int) - no_lips.astype(int)).max(-1) > 0
    ys, xs = np.nonzero(diff)
    assert xs.min() >= x0 - 5 and xs.max() <= x1 + 5 and ys.min() >= y0 - 5 and ys.max() <= y1 + 5
    # no_head: nothing drawn above the neck's face top
    face_top = int(frame["faces"][0, :, 1].min() * H)
    assert not no_head[: max(face_top - 5, 0)].any()
    # body sticks are drawn darkened (x0.6) with the official colours: the first limb (neck - R shoulder) is red-ish
    assert set(POSE_CONDITIONS) == {"init", "no_lips", "no_head", "hands"}
    with pytest.raises(InputError):
        draw_full_pose(frame, H, W, {"tail"})


def test_full_pose_with_body_only_darkens_sticks():
    # one synthetic person: neck (0.5, 0.3) -> right shoulder (0.3, 0.3), score 1
    cand = np.full((18, 2), -1.0)
    cand[1] = (0.5, 0.3)
    cand[2] = (0.3, 0.3)
    score = np.zeros((1, 18))
    score[0, [1, 2]] = 1.0
    subset = np.where(score > 0.3, np.arange(18), -1).astype(float)
    frame = {"bodies": {"candidate": cand, "subset": subset, "score": score}}
    img = draw_full_pose(frame, 800, 800, {"body"})
    # stick colour (255, 0, 0) drawn as BGR, x0.6, then BGR->RGB => blue channel 153 in RGB
    mid = img[240, 320]
    assert tuple(mid) == (0, 0, 153)
    # joint circle of the neck: colour (255, 85, 0) as BGR -> RGB (0, 85, 255)
    assert tuple(img[240, 400]) == (0, 85, 255)


# sha256 of the official draw_pose(pose, H, W, ref_w) output (HWC RGB), computed once with the official
# src/models/dwpose/util.py on the shared demo frames (opencv 4.11); our full drawer must match it.
OFFICIAL_DRAW_POSE_SHA256 = [
    ("fight", 13, 256, 256, 800, "41aafdcfb3f54298e40041fea6c13c5adffb39c970dc5839393b3710a740b054"),
    ("01", 40, 192, 128, 800, "2632c2f0a87cb8c1122c70b67895a185c8073fe277556f74b7f0ca2f792d17e9"),
    ("01", 0, 768, 768, 1080, "d0cb560db1482758df90406821001073dd3999ba3cfce30ea4ed6b342b92054b"),
]


@pytest.mark.parametrize("name,k,H,W,ref_w,digest", OFFICIAL_DRAW_POSE_SHA256)
def test_full_pose_matches_official_draw_pose(media: Path, name, k, H, W, ref_w, digest):
    import hashlib

    from echomimic_core.pose import draw_full_pose_canvas

    frame = load_pose_sequence(media / "pose" / name)[k]
    img = np.ascontiguousarray(draw_full_pose_canvas(frame, H, W, "init", ref_w=ref_w))
    assert hashlib.sha256(img.tobytes()).hexdigest() == digest
