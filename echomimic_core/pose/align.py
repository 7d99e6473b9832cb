"""Alignment of pose sequences and reference images (the official ``get_pose_params`` procedure).

The official demo notebook crops both the reference image and the driving video to a square box
around the upper body (face top ... shoulders/elbows, centred on the neck) and re-normalises the
keypoints to that box. Here that procedure is split into reusable pieces and made automatic:

* :func:`get_pose_params` - the box of one or more detections (official numbers, incl. quirks).
* :func:`resize_and_pad`, :func:`resize_and_pad_param` - the official square resize/pad.
* :func:`crop_reference` - the reference-image crop of the demo notebook (upscale to >= 768 short
  side, box, crop, resize-and-pad to 768) plus the keypoints mapped into the result.
* :func:`sequence_from_detections` - turn per-frame detections of a driving video into a
  :class:`PoseSequence` normalised to its box (what the official preprocessing saves as ``.npy``).
* :func:`align_to_reference` - move/scale a pose sequence so that its person sits where the
  reference person is (face top, neck line and shoulder/elbow bottom matched), given the
  reference's keypoints from either extractor or user-given anchors.

Which points are used (per frame, main person = highest mean body score, face 0 as official):
``top`` = min y of the face landmarks, ``bottom`` = max y of body points 0..6 (nose, neck,
shoulders, elbows), ``mid`` = neck x. Unlike the official code, points with a score <= 0.3 (or
coordinates <= 0) are ignored, with head body points as a fallback when no face point is
usable; with no usable point an :class:`InputError` is raised (the official code crashes).
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from ..errors import InputError
from .formats import BASE_SIZE, FULL_CANVAS, HEAD_BODY_POINTS, N_BODY, PoseSequence, copy_frame, normalize_frame

SCORE_THRESHOLD = 0.3


# ------------------------------------------------------------------ person selection and anchors
def main_person(frame: dict) -> dict:
    """Reduce a detection to one person, as the official ``get_pose_params`` picks it: the body with
    the highest mean score, face 0, and that body's two hands (left hand i and right hand n+i of the
    [all left; all right] stacking - the official code slices 2i:2i+2, which is only right for one
    person)."""
    f = normalize_frame(frame)
    score = f["bodies"]["score"]
    n = score.shape[0]
    out = copy_frame(f)
    if n > 1:
        i = int(np.argmax(score.mean(axis=1)))
        cand = f["bodies"]["candidate"][i * N_BODY:(i + 1) * N_BODY]
        subset = f["bodies"]["subset"][i:i + 1].copy()
        subset[subset >= 0] -= i * N_BODY
        out["bodies"] = {"candidate": cand.copy(), "subset": subset, "score": score[i:i + 1].copy()}
        if f["hands"].shape[0] == 2 * n:
            out["hands"] = f["hands"][[i, n + i]].copy()
            out["hands_score"] = f["hands_score"][[i, n + i]].copy()
    if f["faces"].shape[0] > 1:
        out["faces"] = f["faces"][:1].copy()
        out["faces_score"] = f["faces_score"][:1].copy()
    return out


def _valid(xy: np.ndarray, score: np.ndarray) -> np.ndarray:
    return (score > SCORE_THRESHOLD) & (xy[..., 0] > 0) & (xy[..., 1] > 0) & np.isfinite(xy).all(-1)


def frame_anchors(frame: dict) -> tuple[float, float, float]:
    """``(mid, top, bottom)`` of one frame, normalised coordinates (see the module docstring)."""
    f = main_person(frame)
    if f["bodies"]["score"].shape[0] == 0:
        raise InputError("no person in the pose frame: cannot find the upper-body box")
    body = f["bodies"]["candidate"][:N_BODY]
    bscore = f["bodies"]["score"][0]
    bvalid = _valid(body, bscore)
    if bvalid[1]:
        mid = float(body[1, 0])
    elif bvalid[2] and bvalid[5]:
        mid = float((body[2, 0] + body[5, 0]) / 2)
    else:
        raise InputError("the pose frame has no visible neck or shoulders: cannot find the upper-body box")
    upper = [k for k in range(7) if bvalid[k]]
    bottom = float(body[upper, 1].max())
    top = None
    if f["faces"].shape[0]:
        face, fscore = f["faces"][0], f["faces_score"][0]
        fvalid = _valid(face, fscore)
        if fvalid.any():
            top = float(face[fvalid, 1].min())
    if top is None:
        head = [k for k in HEAD_BODY_POINTS if bvalid[k]]
        if not head:
            raise InputError("the pose frame has no face or head points: cannot find the upper-body box")
        top = float(body[head, 1].min())
    if bottom <= top:
        raise InputError("implausible pose frame: the shoulders are above the face")
    return mid, top, bottom


def sequence_anchors(frames: Sequence[dict], anchor: Any = "all") -> tuple[float, float, float]:
    """Anchors over frames: ``"all"`` (official: mean mid, min top, max bottom), or one frame index."""
    if len(frames) == 0:
        raise InputError("empty pose sequence")
    if anchor == "all":
        a = np.array([frame_anchors(f) for f in frames])
        return float(a[:, 0].mean()), float(a[:, 1].min()), float(a[:, 2].max())
    try:
        return frame_anchors(frames[int(anchor)])
    except (TypeError, ValueError, IndexError):
        raise InputError(f"anchor must be 'all' or a frame index < {len(frames)}, got {anchor!r}") from None


# ------------------------------------------------------------------ official box
def resize_and_pad_param(imh: int, imw: int, max_size: int = BASE_SIZE) -> list[int]:
    """Official ``resize_and_pad_param``: ``[imh_new, imw_new, rb, re, cb, ce]`` (note the quirk: in
    the not-taller branch imh_new is forced to max_size)."""
    half = max_size // 2
    if imh > imw:
        imw_new = int(round(imw / imh * max_size))
        cb = half - imw_new // 2
        return [max_size, imw_new, 0, max_size, cb, cb + imw_new]
    return [max_size, max_size, half - max_size // 2, half - max_size // 2 + max_size, 0, max_size]


def resize_and_pad(img: np.ndarray, max_size: int = BASE_SIZE) -> tuple[np.ndarray, list[int]]:
    """Official ``resize_and_pad``: long side -> ``max_size``, centred on black, cv2 bilinear.
    Returns the image and ``[imh_new, imw_new, rb, re, cb, ce]`` of the placed picture."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise InputError(f"resize_and_pad needs an [H, W, C] image, got shape {img.shape}")
    out = np.zeros((max_size, max_size, img.shape[2]), dtype=img.dtype)
    imh, imw = img.shape[:2]
    half = max_size // 2
    if imh > imw:
        imh_new, imw_new = max_size, int(round(imw / imh * max_size))
        rb, re, cb = 0, max_size, half - imw_new // 2
        ce = cb + imw_new
    else:
        imw_new, imh_new = max_size, int(round(imh / imw * max_size))
        cb, ce, rb = 0, max_size, half - imh_new // 2
        re = rb + imh_new
    resized = cv2.resize(img, (imw_new, imh_new))
    out[rb:re, cb:ce] = resized.reshape(imh_new, imw_new, -1)
    return out, [imh_new, imw_new, rb, re, cb, ce]


def get_pose_params(detections: Sequence[dict], height: int, width: int, max_size: int = BASE_SIZE,
                    bottom_margin: float = 0.05, clamp_left: bool = True, skip_invalid: bool = False) -> dict:
    """The official ``get_pose_params`` on detections normalised to an image of ``height`` x ``width``.

    ``bottom_margin`` 0.05 = demo notebook, 0.5 = EMTD ``preprocess.py``; ``clamp_left`` = the
    notebook's ``w0 < 0`` fix. ``skip_invalid``: ignore frames without a usable person (video
    frames where detection failed) instead of raising. Returns ``{"draw_pose_params": [6 ints], "pose_params": [w_min,
    w_max, h_min, h_max] (normalised box), "video_params": [h0, h1, w0, w1] (pixel crop)}``.
    """
    if not len(detections):
        raise InputError("get_pose_params needs at least one detection")
    if skip_invalid:
        found = []
        for f in detections:
            try:
                found.append(frame_anchors(f))
            except InputError:
                pass
        if not found:
            raise InputError("no frame shows a usable person (face and shoulders): cannot find the upper-body box")
        a = np.array(found)
    else:
        a = np.array([frame_anchors(f) for f in detections])
    mid, h_min, h_max = float(a[:, 0].mean()), float(a[:, 1].min()), float(a[:, 2].max())
    m = (h_max - h_min) * 0.25
    h_min = max(h_min - m * 0.65, 0)
    h_max = min(h_max + m * bottom_margin, 1)
    h0, h1, mid_px = int(h_min * height), int(h_max * height), int(mid * width)
    side = h1 - h0 + 1
    w_side = side
    w0 = mid_px - side // 2
    if clamp_left and w0 < 0:
        w0, w_side = 0, mid_px * 2
    w1 = w0 + w_side
    if w_side <= 0 or side <= 0:
        raise InputError("degenerate upper-body box (the person is at the image edge)")
    return {"draw_pose_params": resize_and_pad_param(side, w_side, max_size),
            "pose_params": [w0 / width, w1 / width, h_min, h_max],
            "video_params": [h0, h1, w0, w1]}


def normalize_to_box(frame: dict, pose_params: Sequence[float]) -> dict:
    """Re-normalise a frame's body, hands and face to the box ``[w_min, w_max, h_min, h_max]``."""
    w_min, w_max, h_min, h_max = (float(v) for v in pose_params)
    f = copy_frame(normalize_frame(frame))
    for arr in (f["bodies"]["candidate"], f["hands"], f["faces"]):
        arr[..., 0] = (arr[..., 0] - w_min) / (w_max - w_min)
        arr[..., 1] = (arr[..., 1] - h_min) / (h_max - h_min)
    return f


def sequence_from_detections(detections: Sequence[dict], height: int, width: int, max_size: int = BASE_SIZE,
                             bottom_margin: float = 0.05, fps: float = 24.0) -> tuple[PoseSequence, dict]:
    """Official driving-video preprocessing: main person per frame, one box for the whole clip,
    keypoints re-normalised to it, ``draw_pose_params`` from the box. Frames without a usable person
    do not count for the box (their points stay where they are). Returns (sequence, params)."""
    params = get_pose_params(detections, height, width, max_size, bottom_margin, skip_invalid=True)
    frames = []
    for k, det in enumerate(detections):
        f = normalize_to_box(main_person(det), params["pose_params"])
        f["num"] = k
        frames.append(f)
    return PoseSequence.from_frames(frames, draw_params=params["draw_pose_params"], fps=fps), params


def crop_reference(image: np.ndarray, keypoints: dict, max_size: int = BASE_SIZE,
                   bottom_margin: float = 0.05) -> tuple[np.ndarray, dict, dict]:
    """The demo notebook's reference alignment on an RGB ``[H, W, 3]`` image and its detection
    (normalised to that image): upscale so the short side is >= ``max_size``, box, crop
    ``img[h0:h1, w0:w1]``, :func:`resize_and_pad` to ``max_size`` square.

    Returns ``(aligned_image, aligned_keypoints, params)``: the keypoints are mapped into the
    aligned image (normalised to it, so they can be fed to :func:`align_to_reference`).
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"reference image must be [H, W, 3], got {img.shape}")
    h, w = img.shape[:2]
    ratio = max(max_size / min(h, w), 1.0)
    if ratio != 1.0:
        img = cv2.resize(img, (int(ratio * w), int(ratio * h)))
    H, W = img.shape[:2]
    params = get_pose_params([keypoints], H, W, max_size, bottom_margin)
    h0, h1, w0, w1 = params["video_params"]
    crop = img[max(h0, 0):h1, max(w0, 0):w1]
    if crop.size == 0:
        raise InputError("the reference crop box is empty")
    aligned, placed = resize_and_pad(crop, max_size)
    imh, imw, rb, re, cb, ce = placed
    # crop pixel (px - w0, py - h0) -> aligned pixel (cb + (px-w0)*imw/cw, rb + (py-h0)*imh/ch)
    ch, cw = crop.shape[:2]
    f = copy_frame(main_person(keypoints))
    for arr in (f["bodies"]["candidate"], f["hands"], f["faces"]):
        missing = (arr[..., 0] <= 0) | (arr[..., 1] <= 0)
        px, py = arr[..., 0] * W - max(w0, 0), arr[..., 1] * H - max(h0, 0)
        arr[..., 0] = (cb + px * imw / cw) / max_size
        arr[..., 1] = (rb + py * imh / ch) / max_size
        arr[missing] = -1.0
    params = dict(params, resize_ratio=ratio, placed=placed)
    return aligned, f, params


# ------------------------------------------------------------------ sequence -> reference
def _reference_anchors(reference: Any) -> tuple[float, float, float]:
    if isinstance(reference, dict) and {"mid", "top", "bottom"} <= set(reference):
        mid, top, bottom = (float(reference[k]) for k in ("mid", "top", "bottom"))
        if not bottom > top:
            raise InputError("reference anchors need bottom > top")
        return mid, top, bottom
    if isinstance(reference, dict):
        return frame_anchors(reference)
    raise InputError("reference keypoints must be a pose frame dict (from an extractor) or a dict with "
                     "'mid' (neck x), 'top' (face top y) and 'bottom' (lowest shoulder/elbow y), normalised to the image")


def align_to_reference(seq: PoseSequence, reference_keypoints: Any, reference_size: Sequence[int] = (BASE_SIZE, BASE_SIZE),
                       anchor: Any = "all", scale: bool = True, return_transform: bool = False):
    """Scale and translate ``seq`` so its person sits where the reference person is.

    ``reference_keypoints``: a frame dict detected on the reference image (either extractor;
    coordinates normalised to that image) or user anchors ``{"mid", "top", "bottom"}`` (neck x,
    face top y, lowest shoulder/elbow y; normalised). ``reference_size``: (height, width) of the
    reference image in pixels (only its aspect matters). ``anchor``: ``"all"`` uses the whole
    sequence's box like the official ``get_pose_params`` (mean neck x, highest face top, lowest
    shoulder/elbow); an int uses that frame. ``scale=False`` only translates.

    The mapping is uniform in pixels: the sequence's face-top..shoulder span becomes the
    reference's, its neck line goes to the reference neck line. Missing points (coordinates <= 0)
    stay missing (-1). The result has full-canvas ``draw_pose_params`` and coordinates normalised
    to the reference image, so draw it at the reference (or output) size. With
    ``return_transform`` also returns ``{"scale": k, "seq_anchors", "ref_anchors"}``.
    """
    if len(seq) == 0:
        raise InputError("cannot align an empty pose sequence")
    Hr, Wr = (float(v) for v in reference_size)
    mid_r, top_r, bot_r = _reference_anchors(reference_keypoints)
    # every frame in the sequence's own canvas pixels (768 base); per-frame params allowed
    sizes = [seq.frame_draw_params(i)[:2] for i in range(len(seq))]
    if len(set(sizes)) != 1:
        raise InputError("align_to_reference needs one canvas size for the whole sequence")
    Hs, Ws = (float(v) for v in sizes[0])
    mid_s, top_s, bot_s = sequence_anchors(seq.frames, anchor)
    k = ((bot_r - top_r) * Hr) / ((bot_s - top_s) * Hs) if scale else Hr / Hs
    frames = []
    for i, frame in enumerate(seq.frames):
        f = copy_frame(normalize_frame(frame))
        f.pop("draw_pose_params", None)
        for arr in (f["bodies"]["candidate"], f["hands"], f["faces"]):
            missing = (arr[..., 0] <= 0) | (arr[..., 1] <= 0)
            px = mid_r * Wr + (arr[..., 0] * Ws - mid_s * Ws) * k
            py = top_r * Hr + (arr[..., 1] * Hs - top_s * Hs) * k
            arr[..., 0], arr[..., 1] = px / Wr, py / Hr
            arr[missing] = -1.0
        frames.append(f)
    out = PoseSequence(frames, FULL_CANVAS, seq.fps, seq.ref_w)
    if return_transform:
        return out, {"scale": k, "seq_anchors": (mid_s, top_s, bot_s), "ref_anchors": (mid_r, top_r, bot_r)}
    return out
