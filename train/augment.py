"""Per-sample geometric augmentation and the reference-frame gap (`data.augment`, `data.min_ref_gap`).

One random square crop per sample, the same for the reference frame, every target frame, the pose
maps (the keypoints are moved into the crop and then drawn, so line widths stay those of inference),
the partial-attention boxes and the content box. Like everything else in a sample it is a pure
function of (stream seed, sample number), so resume and multi-process runs stay exact.

Keypoints that fall outside the crop become missing (-1, score 0): a pose detector run on the
cropped frame would not see them either.
"""

from __future__ import annotations

import numpy as np

from echomimic_core.errors import ConfigError
from train.data import KP_ARRAYS, rng_of


def check_augment(cfg: dict | None) -> dict:
    """Validated `data.augment` ({prob, scale: [min, max]}); prob 0 = off."""
    cfg = dict(cfg or {})
    prob = float(cfg.get("prob", 0.0))
    lo, hi = (float(v) for v in cfg.get("scale", (0.85, 1.0)))
    if not 0.0 <= prob <= 1.0:
        raise ConfigError(f"data.augment.prob is a probability in [0, 1], got {prob}")
    if not 0.1 <= lo <= hi <= 1.0:
        raise ConfigError(f"data.augment.scale must be [min, max] with 0.1 <= min <= max <= 1 (crop side / frame side), "
                         f"got {[lo, hi]}")
    return {"prob": prob, "scale": (lo, hi)}


def crop_box(seed, n: int, aug: dict) -> np.ndarray | None:
    """The sample's crop [x0, y0, x1, y1] normalised to the frame, or None (no augmentation)."""
    if aug["prob"] <= 0.0:
        return None
    rng = rng_of(seed, "augment", n)
    if rng.random() >= aug["prob"]:
        return None
    side = float(rng.uniform(*aug["scale"]))
    x0, y0 = float(rng.uniform(0.0, 1.0 - side)), float(rng.uniform(0.0, 1.0 - side))
    return np.array([x0, y0, x0 + side, y0 + side], dtype=np.float64)


def crop_pixels(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """[H, W, 3] → the box's pixels (rounded to whole pixels, at least 1×1)."""
    h, w = img.shape[:2]
    x0, x1 = int(round(box[0] * w)), int(round(box[2] * w))
    y0, y1 = int(round(box[1] * h)), int(round(box[3] * h))
    return img[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]


def crop_keypoints(kp: dict, frames: list[int], box: np.ndarray) -> dict:
    """keypoints.npz arrays of `frames` (in that order) in the crop's coordinates."""
    x0, y0, x1, y1 = box
    out = {}
    for name in KP_ARRAYS:
        if name.endswith("_score"):
            continue
        pts = np.array(kp[name][frames], dtype=np.float32)          # [..., 2]
        score = np.array(kp[name + "_score"][frames], dtype=np.float32)
        present = (pts[..., 0] >= 0) & (pts[..., 1] >= 0)
        pts[..., 0] = (pts[..., 0] - x0) / (x1 - x0)
        pts[..., 1] = (pts[..., 1] - y0) / (y1 - y0)
        inside = present & (pts[..., 0] >= 0) & (pts[..., 0] <= 1) & (pts[..., 1] >= 0) & (pts[..., 1] <= 1)
        pts[~inside] = -1.0
        score[~inside] = 0.0
        out[name], out[name + "_score"] = pts, score
    return out


def crop_boxes(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Normalised xyxy boxes [..., 4] (a -1 row = none) in the crop's coordinates, clipped to it;
    a box left with no area becomes a -1 row."""
    b = np.array(boxes, dtype=np.float32)
    none = b[..., 2] < 0
    x0, y0, x1, y1 = box
    sx, sy = x1 - x0, y1 - y0
    b[..., 0::2] = np.clip((b[..., 0::2] - x0) / sx, 0.0, 1.0)
    b[..., 1::2] = np.clip((b[..., 1::2] - y0) / sy, 0.0, 1.0)
    empty = none | (b[..., 2] <= b[..., 0]) | (b[..., 3] <= b[..., 1])
    b[empty] = -1.0
    return b


def reference_frame(rng: np.random.Generator, num_frames: int, targets: list[int], gap: int) -> int:
    """A reference frame at least `gap` frames from every target frame (uniform over those); when the
    clip has none, the frame farthest from the targets (the largest gap the clip allows)."""
    idx = np.arange(num_frames)
    dist = np.min(np.abs(idx[:, None] - np.asarray(targets)[None, :]), axis=1)
    ok = idx[dist >= gap]
    if len(ok):
        return int(ok[rng.integers(0, len(ok))])
    return int(idx[np.argmax(dist)])
