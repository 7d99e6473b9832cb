"""Pose drawing, pixel-compatible with the official EchoMimicV2 drawers.

* :func:`draw_pose_select_v2` / :func:`draw_hands` - the inference condition (hands only), same
  semantics as the official ``draw_pose_select_v2(pose, H, W, ref_w=800)`` plus the paste into
  ``[rb:re, cb:ce]`` that ``infer.py`` does.
* :func:`draw_full_pose` - body sticks + hands + face landmarks in the style of the official
  ``draw_pose`` (``src/models/dwpose/util.py``), with parts that can be left out, for the training
  conditions P^init, P^-lips, P^-head and P^hands (see :data:`POSE_CONDITIONS`).
* :func:`render_frames` - draw only the frames a sampling window needs.

All functions return RGB ``uint8`` arrays of shape ``[H, W, 3]``. Drawing happens on an internal
canvas whose short side is ``ref_w`` (800), treated as BGR by OpenCV, then resized to the target
with ``cv2.resize`` (bilinear) and converted BGR->RGB, exactly as the official code does.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from ..errors import InputError
from .formats import (DEFAULT_REF_W, FULL_CANVAS, HEAD_BODY_POINTS, LIPS_FACE_POINTS, PoseSequence,
                      scale_draw_params, validate_draw_params)

EPS = 0.01

HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
              (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))

# OpenPose limbs as 0-based point pairs (the official list is 1-based); only the first 17 are drawn.
BODY_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
              (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17))
BODY_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
               (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
               (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
STICK_WIDTH = 4

ALL_PARTS = frozenset({"body", "head", "hands", "face", "lips"})
POSE_CONDITIONS = {
    "init": ALL_PARTS,                                  # P^init: complete half-body map
    "no_lips": ALL_PARTS - {"lips"},                    # P^-lips: everything except mouth landmarks
    "no_head": frozenset({"body", "hands"}),            # P^-head: no face landmarks, no nose/eyes/ears
    "hands": frozenset({"hands"}),                      # P^hands: the inference condition
}
"""Named part sets for :func:`draw_full_pose` (TRAINING.md section 2). Parts: ``body`` (neck,
shoulders, arms, hips, legs and their sticks), ``head`` (nose, eyes, ears and the sticks that touch
them), ``hands``, ``face`` (the 48 non-mouth face landmarks), ``lips`` (face landmarks 48-67)."""


def _hsv_ramp(ie: int, n: int) -> tuple[float, float, float]:
    """HSV(h=ie/n, s=1, v=1) -> RGB floats, the same arithmetic as ``matplotlib.colors.hsv_to_rgb``."""
    h = ie / float(n)
    i = int(h * 6.0)
    f = h * 6.0 - i
    v, p = 1.0, 0.0
    q = 1.0 * (1.0 - 1.0 * f)
    t = 1.0 * (1.0 - 1.0 * (1.0 - f))
    return ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))[i % 6]


_HAND_EDGE_RGB = tuple(_hsv_ramp(ie, len(HAND_EDGES)) for ie in range(len(HAND_EDGES)))


def _draw_hands_on(canvas: np.ndarray, hands: np.ndarray, hands_score: np.ndarray) -> None:
    """Official ``draw_handpose`` semantics on a BGR canvas, in place."""
    H, W = canvas.shape[:2]
    for peaks, scores in zip(hands, hands_score):
        for ie, (a, b) in enumerate(HAND_EDGES):
            x1, y1 = int(peaks[a][0] * W), int(peaks[a][1] * H)
            x2, y2 = int(peaks[b][0] * W), int(peaks[b][1] * H)
            s = int(scores[a] * scores[b] * 255)
            if x1 > EPS and y1 > EPS and x2 > EPS and y2 > EPS:
                r, g, bl = _HAND_EDGE_RGB[ie]
                cv2.line(canvas, (x1, y1), (x2, y2), (r * s, g * s, bl * s), thickness=2)
        for i in range(len(peaks)):
            x, y = int(peaks[i][0] * W), int(peaks[i][1] * H)
            s = int(scores[i] * 255)
            if x > EPS and y > EPS:
                cv2.circle(canvas, (x, y), 4, (0, 0, s), thickness=-1)


def _canvas(height: int, width: int, ref_w: int) -> np.ndarray:
    if height <= 0 or width <= 0:
        raise InputError(f"pose drawing size must be positive, got {height}x{width}")
    sz = min(height, width)
    sr = (ref_w / sz) if sz != ref_w else 1
    return np.zeros((int(height * sr), int(width * sr), 3), dtype=np.uint8)


def _finish(canvas: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.cvtColor(cv2.resize(canvas, (width, height)), cv2.COLOR_BGR2RGB)


def _hands_of(frame: dict) -> tuple[np.ndarray, np.ndarray]:
    try:
        hands = np.asarray(frame.get("hands", np.zeros((0, 21, 2))), dtype=np.float64).reshape(-1, 21, 2)
        scores = np.asarray(frame.get("hands_score", np.ones(hands.shape[:2])), dtype=np.float64).reshape(-1, 21)
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"pose frame has malformed hands: {exc}") from None
    if scores.shape[0] != hands.shape[0]:
        raise InputError(f"hands {hands.shape} and hands_score {scores.shape} disagree")
    return hands, scores


def draw_pose_select_v2(frame: dict, height: int, width: int, ref_w: int = DEFAULT_REF_W) -> np.ndarray:
    """The official inference drawer: hands only, at ``height`` x ``width`` -> RGB uint8 ``[H, W, 3]``.

    (The official function returns CHW; this returns HWC.) Bodies and faces are ignored.
    """
    hands, scores = _hands_of(frame)
    canvas = _canvas(height, width, ref_w)
    _draw_hands_on(canvas, hands, scores)
    return _finish(canvas, height, width)


def _paste(frame: dict, height: int, width: int, draw_params: Sequence[int] | None,
           draw: Callable[[int, int], np.ndarray]) -> np.ndarray:
    if draw_params is None:
        draw_params = frame.get("draw_pose_params") or FULL_CANVAS
    imh, imw, rb, re, cb, ce = scale_draw_params(draw_params, int(height), int(width))
    if re > height or ce > width:
        raise InputError(f"draw_pose_params {list(validate_draw_params(draw_params))} do not fit a "
                         f"{height}x{width} output")
    out = np.zeros((int(height), int(width), 3), dtype=np.uint8)
    out[rb:re, cb:ce] = draw(imh, imw)
    return out


def draw_hands(frame: dict, height: int, width: int, draw_params: Sequence[int] | None = None,
               ref_w: int = DEFAULT_REF_W) -> np.ndarray:
    """Pose condition image exactly as the official inference makes it -> RGB uint8 ``[H, W, 3]``.

    A black ``height`` x ``width`` image with :func:`draw_pose_select_v2` drawn at ``(imh, imw)`` and
    pasted at ``[rb:re, cb:ce]``. ``draw_params`` (768-based, default: the frame's own
    ``draw_pose_params``, else full canvas) are scaled by H/768, W/768 for other output sizes.
    """
    return _paste(frame, height, width, draw_params, lambda h, w: draw_pose_select_v2(frame, h, w, ref_w))


def _draw_body_on(canvas: np.ndarray, frame: dict, parts: frozenset, threshold: float) -> np.ndarray:
    bodies = frame.get("bodies") or {}
    cand = np.asarray(bodies.get("candidate", np.zeros((0, 2))), dtype=np.float64).reshape(-1, 2)
    subset = np.asarray(bodies.get("subset", np.zeros((0, 18))), dtype=np.float64).reshape(-1, 18)
    score = np.asarray(bodies.get("score", (subset >= 0).astype(float)), dtype=np.float64).reshape(-1, 18)
    H, W = canvas.shape[:2]

    def wanted(k: int) -> bool:
        return ("head" in parts) if k in HEAD_BODY_POINTS else ("body" in parts)

    for i in range(17):
        a, b = BODY_LIMBS[i]
        if not (wanted(a) and wanted(b)):
            continue
        for n in range(len(subset)):
            ca, cb = score[n][a], score[n][b]
            if ca < threshold or cb < threshold:
                continue
            ia, ib = int(subset[n][a]), int(subset[n][b])
            Y = (cand[ia, 0] * float(W), cand[ib, 0] * float(W))
            X = (cand[ia, 1] * float(H), cand[ib, 1] * float(H))
            mX, mY = (X[0] + X[1]) / 2, (Y[0] + Y[1]) / 2
            length = ((X[0] - X[1]) ** 2 + (Y[0] - Y[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(X[0] - X[1], Y[0] - Y[1]))
            poly = cv2.ellipse2Poly((int(mY), int(mX)), (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, poly, [int(c * ca * cb) for c in BODY_COLORS[i]])
    canvas = (canvas * 0.6).astype(np.uint8)
    for i in range(18):
        if not wanted(i):
            continue
        for n in range(len(subset)):
            idx = int(subset[n][i])
            if idx == -1:
                continue
            x, y = cand[idx][0:2]
            conf = score[n][i]
            cv2.circle(canvas, (int(x * W), int(y * H)), 4, [int(c * conf) for c in BODY_COLORS[i]], thickness=-1)
    return canvas


def _draw_face_on(canvas: np.ndarray, frame: dict, parts: frozenset, threshold: float) -> None:
    faces = np.asarray(frame.get("faces", np.zeros((0, 68, 2))), dtype=np.float64).reshape(-1, 68, 2)
    scores = np.asarray(frame.get("faces_score", np.ones(faces.shape[:2])), dtype=np.float64).reshape(-1, 68)
    H, W = canvas.shape[:2]
    for lmks, scs in zip(faces, scores):
        for k in range(len(lmks)):
            if ("lips" if k in LIPS_FACE_POINTS else "face") not in parts:
                continue
            x, y = int(lmks[k][0] * W), int(lmks[k][1] * H)
            s = scs[k] if scs[k] >= threshold else 0
            conf = int(s * 255)
            if x > EPS and y > EPS:
                cv2.circle(canvas, (x, y), 3, (conf, conf, conf), thickness=-1)


def _parts(parts) -> frozenset:
    if isinstance(parts, str):
        if parts in POSE_CONDITIONS:
            return POSE_CONDITIONS[parts]
        parts = [parts]
    chosen = frozenset(parts)
    unknown = chosen - ALL_PARTS
    if unknown:
        raise InputError(f"unknown pose parts {sorted(unknown)}; use a subset of {sorted(ALL_PARTS)} "
                         f"or one of {sorted(POSE_CONDITIONS)}")
    return chosen


def draw_full_pose_canvas(frame: dict, height: int, width: int, parts=ALL_PARTS, ref_w: int = DEFAULT_REF_W,
                          body_threshold: float = 0.5, face_threshold: float = 0.5) -> np.ndarray:
    """Official ``draw_pose`` drawn directly at ``height`` x ``width`` (no paste), with optional parts.

    Order and style as the official drawer: body sticks (ellipses, width 4, colour x score product,
    skipped below ``body_threshold``), canvas x 0.6, joint circles r4, hands (as the inference
    drawer), face landmarks r3 grey = score (score < ``face_threshold`` -> drawn black).
    With all parts this equals the official ``draw_pose(pose, H, W, ref_w)``.
    """
    chosen = _parts(parts)
    canvas = _canvas(height, width, ref_w)
    if chosen & {"body", "head"}:
        canvas = _draw_body_on(canvas, frame, chosen, body_threshold)
    if "hands" in chosen:
        _draw_hands_on(canvas, *_hands_of(frame))
    if chosen & {"face", "lips"}:
        _draw_face_on(canvas, frame, chosen, face_threshold)
    return _finish(canvas, height, width)


def draw_full_pose(frame: dict, height: int, width: int, parts=ALL_PARTS, draw_params: Sequence[int] | None = None,
                   ref_w: int = DEFAULT_REF_W, body_threshold: float = 0.5, face_threshold: float = 0.5) -> np.ndarray:
    """Full pose image (body + hands + face, parts selectable) -> RGB uint8 ``[H, W, 3]``.

    ``parts``: a set from ``{"body", "head", "hands", "face", "lips"}`` or a condition name from
    :data:`POSE_CONDITIONS` (``"init"``, ``"no_lips"``, ``"no_head"``, ``"hands"``). The drawing is
    placed with ``draw_params`` like :func:`draw_hands`. ``ref_w`` defaults to 800 (the official
    ``draw_pose`` default is 1080, EMTD visualisation uses 800).
    """
    return _paste(frame, height, width, draw_params,
                  lambda h, w: draw_full_pose_canvas(frame, h, w, parts, ref_w, body_threshold, face_threshold))


def render_frames(seq: PoseSequence, indices: Iterable[int], height: int, width: int,
                  parts=None) -> np.ndarray:
    """Draw only frames ``indices`` of ``seq`` -> RGB uint8 ``[n, H, W, 3]``.

    ``parts=None`` (default) draws the inference condition (:func:`draw_hands`); otherwise
    :func:`draw_full_pose` with those parts. Indices may repeat (looping windows). Memory is
    ``n * H * W * 3`` bytes, whatever the length of the sequence.
    """
    idx = [int(i) for i in indices]
    n = len(seq)
    out = np.zeros((len(idx), int(height), int(width), 3), dtype=np.uint8)
    for k, i in enumerate(idx):
        if not -n <= i < n:
            raise InputError(f"pose frame index {i} out of range for a sequence of {n} frames")
        params = seq.frame_draw_params(i)
        if parts is None:
            out[k] = draw_hands(seq.frames[i], height, width, params, seq.ref_w)
        else:
            out[k] = draw_full_pose(seq.frames[i], height, width, parts, params, seq.ref_w)
    return out
