"""HKC and HKV: hand keypoint confidence and variance of a generated clip, from the pose extractor.

Sources. The EchoMimicV2 paper (§4.1, "Evaluation Metric") takes both from CyberHost: "HKC (Hand
Keypoint Confidence) averages is adopted to evaluate hand quality in audio-driven scenarios, and HKV
(Hand Keypoint Variance) is calculated to indicate the richness of hand movements." Neither paper
gives a formula, and no official code exists (shared/reference/FIELD_2026.md §4.2: "exact CyberHost
formula not found; consistent usage: HKC = mean hand-keypoint detector confidence, HKV = variance of
hand-keypoint positions over time"). What is implemented here, on the frame dicts of
:mod:`echomimic_core.pose` (DWPose: SimCC confidences; mediapipe: 1 for a found hand, 0 otherwise):

* take the main person of each frame (highest mean body score) and its two hands, 2 x 21 points;
* **HKC** = mean confidence over all frames, both hands and all 21 points (a hand the detector did not
  return counts with confidence 0);
* **HKV** = for every (hand, point, axis), the variance over time (population variance, ``ddof=0``)
  of the point's **pixel** coordinate, taken over the frames where that point's confidence is at
  least ``CONF_THRESHOLD`` (0.3, the DWPose drawing threshold) - points seen in fewer than 2 frames are
  left out - then the mean over those (hand, point, axis) entries. Unit: pixels^2 of the evaluated
  frames, so HKV grows with the resolution; compare figures at one size.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from .face import main_person

CONF_THRESHOLD = 0.3
N_HAND = 21


def hand_arrays(frames: Iterable[dict], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Main person's hands per frame: pixel positions ``[F, 2, 21, 2]`` and confidences ``[F, 2, 21]``.

    Frame dicts store all persons' left hands first, then all right hands (``hands`` ``[2n, 21, 2]``).
    """
    pos, conf = [], []
    for fr in frames:
        hands = np.asarray(fr.get("hands", np.zeros((0, N_HAND, 2))), dtype=np.float64).reshape(-1, N_HAND, 2)
        score = np.asarray(fr.get("hands_score", np.zeros(hands.shape[:2])), dtype=np.float64).reshape(-1, N_HAND)
        n = len(hands) // 2
        p_xy = np.full((2, N_HAND, 2), np.nan)
        p_sc = np.zeros((2, N_HAND))
        if n:
            p = min(main_person(fr), n - 1)
            for k, row in enumerate((p, n + p)):
                p_xy[k] = hands[row] * np.array([width, height])
                p_sc[k] = score[row]
        pos.append(p_xy)
        conf.append(p_sc)
    return np.asarray(pos).reshape(-1, 2, N_HAND, 2), np.asarray(conf).reshape(-1, 2, N_HAND)


def hkc(conf: np.ndarray) -> float:
    """Mean hand keypoint confidence of ``[F, 2, 21]`` confidences."""
    c = np.asarray(conf, dtype=np.float64)
    return float(c.mean()) if c.size else float("nan")


def hkv(pos: np.ndarray, conf: np.ndarray, threshold: float = CONF_THRESHOLD) -> float:
    """Mean temporal variance (pixels^2) of the confident hand keypoint coordinates ``[F, 2, 21, 2]``."""
    pos, conf = np.asarray(pos, dtype=np.float64), np.asarray(conf, dtype=np.float64)
    seen = (conf >= threshold) & np.isfinite(pos).all(-1)  # [F, 2, 21]
    values = []
    for h in range(pos.shape[1]):
        for k in range(pos.shape[2]):
            m = seen[:, h, k]
            if m.sum() >= 2:
                values.extend(pos[m, h, k].var(0))  # x and y
    return float(np.mean(values)) if values else float("nan")


def hand_metrics(frames: np.ndarray, extractor: Callable[[np.ndarray], dict]) -> dict:
    """``{"hkc", "hkv"}`` of uint8 frames ``[F, H, W, 3]`` with a pose extractor (frame -> frame dict)."""
    dets = [extractor(f) for f in frames]
    pos, conf = hand_arrays(dets, frames.shape[2], frames.shape[1])
    return {"hkc": hkc(conf), "hkv": hkv(pos, conf)}
