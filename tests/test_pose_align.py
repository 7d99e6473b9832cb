"""Alignment of pose sequences to a reference person and the reference crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from echomimic_core.errors import InputError
from echomimic_core.pose import (PoseSequence, align_to_reference, normalize_frame,
                                 crop_reference, empty_frame, frame_anchors, get_pose_params, load_pose_sequence,
                                 resize_and_pad, resize_and_pad_param, sequence_from_detections)


def _transform(frame: dict, k: float, tx: float, ty: float, size=(768, 768), out=(768, 768)) -> dict:
    """Scale by k about the origin and shift by (tx, ty) pixels; coordinates normalised to size -> out."""
    f = normalize_frame(frame)
    for arr in (f["bodies"]["candidate"], f["hands"], f["faces"]):
        missing = (arr[..., 0] <= 0) | (arr[..., 1] <= 0)
        arr[..., 0] = (arr[..., 0] * size[1] * k + tx) / out[1]
        arr[..., 1] = (arr[..., 1] * size[0] * k + ty) / out[0]
        arr[missing] = -1
    return f


def _px_err(a: dict, b: dict, size=(768, 768)) -> float:
    errs = []
    for x, y in ((a["bodies"]["candidate"], b["bodies"]["candidate"]), (a["hands"], b["hands"]), (a["faces"], b["faces"])):
        ok = (x[..., 0] > 0) & (x[..., 1] > 0) & (y[..., 0] > 0) & (y[..., 1] > 0)
        d = (x - y) * np.array([size[1], size[0]])
        errs.append(np.abs(d[ok]).max() if ok.any() else 0.0)
    return float(max(errs))


@pytest.mark.parametrize("anchor", ["all", 0])
def test_known_transform_is_recovered(media: Path, anchor):
    seq = load_pose_sequence(media / "pose" / "01").select(range(0, 48, 4))
    k, tx, ty = 0.8, 60.0, 90.0
    target = [_transform(f, k, tx, ty) for f in seq.frames]
    if anchor == "all":  # reference = the transformed sequence's own box, as user anchors
        a = np.array([frame_anchors(f) for f in target])
        ref = {"mid": a[:, 0].mean(), "top": a[:, 1].min(), "bottom": a[:, 2].max()}
    else:  # reference = detection of the transformed frame 0
        ref = target[0]
    out, tr = align_to_reference(seq, ref, (768, 768), anchor=anchor, return_transform=True)
    assert abs(tr["scale"] - k) < 1e-6
    assert out.draw_params == (768, 768, 0, 768, 0, 768)
    for got, want in zip(out.frames, target):
        assert _px_err(got, want) <= 2.0


def test_align_to_non_square_reference(media: Path):
    seq = load_pose_sequence(media / "pose" / "fight").select(range(10))
    H, W = 1024, 640
    k, tx, ty = 1.2, -150.0, 200.0
    ref = _transform(seq[3], k, tx, ty, out=(H, W))
    out = align_to_reference(seq, ref, (H, W), anchor=3)
    for got, src in zip(out.frames, seq.frames):
        assert _px_err(got, _transform(src, k, tx, ty, out=(H, W)), size=(H, W)) <= 2.0
    # translate only
    out2, tr = align_to_reference(seq, ref, (H, W), anchor=3, scale=False, return_transform=True)
    assert tr["scale"] == pytest.approx(H / 768)


def test_align_errors(media: Path):
    seq = load_pose_sequence(media / "pose" / "01").select([0])
    with pytest.raises(InputError, match="no person|no visible"):
        align_to_reference(seq, empty_frame(1))
    with pytest.raises(InputError):
        align_to_reference(seq, "nonsense")
    with pytest.raises(InputError):
        align_to_reference(PoseSequence([]), seq[0])


def test_resize_and_pad_official_numbers():
    assert resize_and_pad_param(500, 500, 768) == [768, 768, 0, 768, 0, 768]
    assert resize_and_pad_param(600, 400, 768) == [768, 512, 0, 768, 128, 640]
    assert resize_and_pad_param(400, 600, 768) == [768, 768, 0, 768, 0, 768]  # official quirk
    img = np.full((600, 400, 3), 200, np.uint8)
    out, placed = resize_and_pad(img, 768)
    assert out.shape == (768, 768, 3) and placed == [768, 512, 0, 768, 128, 640]
    assert (out[:, 128:640] == 200).all() and not out[:, :128].any() and not out[:, 640:].any()


def test_get_pose_params_and_crop_reference(media: Path):
    # a detection in full-image coordinates: the demo frame shrunk into a 1000x800 image
    frame = _transform(load_pose_sequence(media / "pose" / "01")[0], 0.5, 200.0, 300.0, out=(1000, 800))
    params = get_pose_params([frame], 1000, 800)
    h0, h1, w0, w1 = params["video_params"]
    mid, top, bottom = frame_anchors(frame)
    m = 0.25 * (bottom - top)
    assert h0 == int(max(top - 0.65 * m, 0) * 1000) and h1 == int(min(bottom + 0.05 * m, 1) * 1000)
    assert w1 - w0 == h1 - h0 + 1 and abs((w0 + w1) / 2 - mid * 800) <= 1
    assert params["draw_pose_params"] == [768, 768, 0, 768, 0, 768]
    # EMTD preprocess margin
    assert get_pose_params([frame], 1000, 800, bottom_margin=0.5)["video_params"][1] > h1
    # reference crop: keypoints follow the pixels
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (1000, 800, 3), dtype=np.uint8)
    aligned, kp, p = crop_reference(img, frame)
    assert aligned.shape == (768, 768, 3) and p["resize_ratio"] == 1.0
    # the person's anchors map into the aligned image consistently with the crop box
    mid2, top2, _ = frame_anchors(kp)
    assert abs(mid2 - 0.5) < 0.01
    assert top2 > 0 and top2 < 0.3
    # a small image is upscaled first (short side 768), the result is the same crop
    small = img[::2, ::2].copy()
    aligned_s, kp_s, p_s = crop_reference(small, frame)
    assert p_s["resize_ratio"] == pytest.approx(768 / 400)
    assert abs(frame_anchors(kp_s)[1] - top2) < 0.01
    # sequence_from_detections: normalised to the box, draw params stored
    seq, params2 = sequence_from_detections([frame, frame], 1000, 800)
    assert len(seq) == 2 and seq.draw_params == tuple(params2["draw_pose_params"])
    w_min, w_max, h_min, h_max = params2["pose_params"]
    assert np.allclose(seq[0]["hands"][0, 0, 0], (frame["hands"][0, 0, 0] - w_min) / (w_max - w_min))


def test_extract_sequence_with_any_extractor(media: Path):
    from echomimic_core.pose import extract_sequence, official_frame_stride

    src = load_pose_sequence(media / "pose" / "01").select(range(6))
    dets = [_transform(f, 0.5, 200.0, 300.0, out=(1000, 800)) for f in src.frames]
    dets[3] = empty_frame(1)  # detection failed on one frame: it does not break the box
    it = iter(dets)
    frames = (np.zeros((1000, 800, 3), np.uint8) for _ in range(6))
    seen = []
    seq, params = extract_sequence(frames, lambda img: next(it), fps=25.0, progress=seen.append)
    assert len(seq) == 6 and seq.fps == 25.0 and seen == list(range(6))
    assert params == get_pose_params([d for i, d in enumerate(dets) if i != 3], 1000, 800)
    assert [f["num"] for f in seq.frames] == list(range(6))
    it = iter(dets)
    raw, none = extract_sequence((np.zeros((1000, 800, 3), np.uint8) for _ in range(6)), lambda img: next(it), align=False)
    assert none is None and np.array_equal(raw[0]["hands"], dets[0]["hands"])
    with pytest.raises(InputError):
        extract_sequence([], lambda img: empty_frame())
    assert official_frame_stride(30) == 1 and official_frame_stride(60) == 2 and official_frame_stride(12) == 1
