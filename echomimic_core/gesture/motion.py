"""Hand/arm motion in body coordinates: the representation the gesture model and the pose library
work in, and the way back to our per-frame pose dicts.

A motion frame is 44 points (88 numbers, ``[44, 2]``): the two 21-point hands in the official order
(hand 0 = the person's left hand, hand 1 = the right), then the left elbow (OpenPose body 6) and the
right elbow (body 3). Wrists are hand point 0 (and OpenPose body 7 / 4 are set from them). Points are
expressed relative to the neck (OpenPose 1; the shoulder midpoint when the neck is missing) in units
of the shoulder width, measured in pixels of the image the pose belongs to, so one motion fits
people of any size and position. Everything else in a frame (head, face, shoulders, hips) is taken
from the reference frame and held.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError
from ..pose.align import SCORE_THRESHOLD, main_person
from ..pose.formats import N_BODY, N_HAND, copy_frame, normalize_frame

NUM_POINTS = 2 * N_HAND + 2
MOTION_DIM = 2 * NUM_POINTS
ELBOWS = (6, 3)
"""OpenPose-18 elbow of hand 0 (person's left) and hand 1 (right)."""
WRISTS = (7, 4)
SHOULDERS = (5, 2)
DEFAULT_SCORE = 0.95
"""Confidence given to generated points where the reference has none (drawn at almost full colour)."""


def _valid(xy: np.ndarray, score: np.ndarray) -> np.ndarray:
    return (score > SCORE_THRESHOLD) & (xy[..., 0] > 0) & (xy[..., 1] > 0) & np.isfinite(xy).all(-1)


def body_frame_arrays(bodies: np.ndarray, bodies_score: np.ndarray, size: Sequence[int] = (1, 1)):
    """Origin (neck) ``[F, 2]`` in normalised coordinates and shoulder width ``[F]`` in pixels of
    ``size`` = (H, W) for ``bodies [F, 18, 2]``; NaN where the shoulders are not both visible."""
    H, W = (float(v) for v in size)
    b = np.asarray(bodies, dtype=np.float64)
    v = _valid(b, np.asarray(bodies_score, dtype=np.float64))
    both = v[:, 2] & v[:, 5]
    mid = (b[:, 2] + b[:, 5]) / 2
    origin = np.where(v[:, 1:2], b[:, 1], mid)
    d = (b[:, 2] - b[:, 5]) * np.array([W, H])
    scale = np.where(both, np.linalg.norm(d, axis=-1), np.nan)
    origin[~(both | v[:, 1])] = np.nan
    return origin, scale


def points_from_arrays(bodies, bodies_score, hands, hands_score):
    """Arm points ``[F, 44, 2]`` (normalised image coordinates) and their validity ``[F, 44]``."""
    b, bs = np.asarray(bodies, dtype=np.float64), np.asarray(bodies_score, dtype=np.float64)
    h, hs = np.asarray(hands, dtype=np.float64), np.asarray(hands_score, dtype=np.float64)
    F = b.shape[0]
    pts = np.concatenate([h.reshape(F, 2 * N_HAND, 2), b[:, list(ELBOWS)]], axis=1)
    sc = np.concatenate([hs.reshape(F, 2 * N_HAND), bs[:, list(ELBOWS)]], axis=1)
    return pts, _valid(pts, sc)


def to_motion(points: np.ndarray, origin: np.ndarray, scale: np.ndarray, size: Sequence[int] = (1, 1)) -> np.ndarray:
    """Normalised image points ``[..., 44, 2]`` -> body coordinates (see the module docstring)."""
    H, W = (float(v) for v in size)
    px = np.array([W, H])
    return (points - origin[..., None, :]) * px / scale[..., None, None]


def from_motion(motion: np.ndarray, origin: np.ndarray, scale, size: Sequence[int] = (1, 1)) -> np.ndarray:
    """Inverse of :func:`to_motion`: ``[..., 44, 2]`` body coordinates -> normalised image points."""
    H, W = (float(v) for v in size)
    px = np.array([W, H])
    return np.asarray(origin)[..., None, :] + np.asarray(motion) * np.asarray(scale)[..., None, None] / px


def frame_arrays(frame: dict) -> dict:
    """One pose frame (main person) as the single-frame arrays of keypoints.npz."""
    f = main_person(frame)
    if f["bodies"]["score"].shape[0] == 0:
        raise InputError("the reference pose has no person: give a reference pose with the upper body visible")
    hands = f["hands"] if f["hands"].shape[0] == 2 else -np.ones((2, N_HAND, 2))
    hs = f["hands_score"] if f["hands"].shape[0] == 2 else np.zeros((2, N_HAND))
    return {"bodies": f["bodies"]["candidate"][:N_BODY][None], "bodies_score": f["bodies"]["score"][:1],
            "hands": hands[None], "hands_score": hs[None]}


class Anchor:
    """The reference person's body frame and own arm pose.

    ``origin`` (normalised), ``scale`` (shoulder width, px), ``motion [44, 2]`` (the reference's arm
    points in body coordinates) and ``valid [44]`` (which of them the reference actually shows);
    ``frame`` is the reference frame the output frames are built from.
    """

    def __init__(self, frame: dict, size: Sequence[int] = (1, 1)):
        self.size = (int(size[0]), int(size[1]))
        a = frame_arrays(frame)
        origin, scale = body_frame_arrays(a["bodies"], a["bodies_score"], self.size)
        if not np.isfinite(scale[0]) or scale[0] <= 0:
            raise InputError("the reference pose has no visible shoulders, so gestures cannot be placed on the body; "
                             "give a reference pose showing both shoulders, or use still hands")
        self.origin, self.scale = origin[0], float(scale[0])
        pts, valid = points_from_arrays(a["bodies"], a["bodies_score"], a["hands"], a["hands_score"])
        self.motion = to_motion(pts[0], self.origin, np.float64(self.scale), self.size)
        self.valid = valid[0]
        self.frame = main_person(frame)
        self.frame.pop("draw_pose_params", None)
        self.frame.pop("num", None)

    def filled(self, default_motion: np.ndarray) -> np.ndarray:
        """The reference motion with each hand (and elbow) the reference does not show replaced by
        ``default_motion`` (e.g. the gesture model's mean rest pose). ``[44, 2]``."""
        m = self.motion.copy()
        d = np.asarray(default_motion, dtype=np.float64).reshape(NUM_POINTS, 2)
        for h in range(2):
            sl = slice(h * N_HAND, (h + 1) * N_HAND)
            if self.valid[sl].mean() < 0.5:  # a hand the detector mostly missed: use the default hand
                m[sl] = d[sl]
            else:
                m[sl][~self.valid[sl]] = d[sl][~self.valid[sl]]
        for k in (2 * N_HAND, 2 * N_HAND + 1):
            if not self.valid[k]:
                m[k] = d[k]
        return m

    def frames(self, motion: np.ndarray) -> list[dict]:
        """Pose frames for a motion ``[F, 44, 2]``: the reference frame with the hands, elbows and
        wrists replaced. Scores: the reference's where it showed the point, else 0.95; a point that
        falls outside the image gets score 0 (not drawn)."""
        pts = from_motion(np.asarray(motion, dtype=np.float64), self.origin, self.scale, self.size)
        ref = normalize_frame(self.frame)
        base_hs = ref["hands_score"] if ref["hands"].shape[0] == 2 else np.zeros((2, N_HAND))
        score_pts = np.where(self.valid, np.concatenate([base_hs.reshape(-1), ref["bodies"]["score"][0, list(ELBOWS)]]),
                             DEFAULT_SCORE)
        out = []
        for k in range(pts.shape[0]):
            f = copy_frame(ref)
            p = pts[k]
            inside = (p > 0).all(-1) & (p < 1).all(-1)
            sc = np.where(inside, np.maximum(score_pts, SCORE_THRESHOLD + 0.05), 0.0)
            f["hands"] = p[:2 * N_HAND].reshape(2, N_HAND, 2).copy()
            f["hands_score"] = sc[:2 * N_HAND].reshape(2, N_HAND).copy()
            cand, bscore, subset = f["bodies"]["candidate"], f["bodies"]["score"], f["bodies"]["subset"]
            for j, (e, w) in enumerate(zip(ELBOWS, WRISTS)):
                cand[e], bscore[0, e] = p[2 * N_HAND + j], sc[2 * N_HAND + j]
                cand[w], bscore[0, w] = p[j * N_HAND], sc[j * N_HAND]
            subset[0] = np.where(bscore[0] > SCORE_THRESHOLD, np.arange(N_BODY, dtype=np.float64), -1.0)
            out.append(f)
        return out
