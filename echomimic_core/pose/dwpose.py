"""DWPose whole-body keypoints with onnxruntime on LOCAL model files (nothing is downloaded).

Files (from the HF repo ``yzd-v/DWPose``): detector ``yolox_l.onnx`` and pose ``dw-ll_ucoco_384.onnx``.
:func:`find_dwpose_files` looks in the folder the user names, or under a ComfyUI models folder in
``<models>/echomimic_v2/dwpose/``, ``<models>/dwpose/``, ``<models>/echomimic_v2/``, ``<models>/``.

Processing (the facts of the official ``src/models/dwpose`` code, own implementation):

1. Detector: letterbox to the detector input (640x640; read from the onnx input when static) -
   scale ``r = min(640/h, 640/w)``, cv2 INTER_LINEAR, top-left, pad 114, CHW float32 of the
   unnormalised pixels. YOLOX decode over strides 8/16/32 (grid + offset) * stride, exp(wh) * stride;
   score = objectness * class score; boxes / r; per-class NMS (IoU 0.45, score > 0.1); keep class 0
   with score > 0.3. No box -> the whole image is used as one box.
2. Pose, per box: centre/scale with padding 1.25, aspect fixed to the model input (w/h), affine
   warp (INTER_LINEAR) to the input size read from the onnx input shape (288x384 for
   ``dw-ll_ucoco_384``), normalise with mean (123.675, 116.28, 103.53) / std (58.395, 57.12, 57.375),
   SimCC argmax decode (split ratio 2), score = min(max_x, max_y), locations -1 where score <= 0,
   mapped back with ``kp / input_size * scale + center - scale / 2``.
3. Neck = mean of the shoulders (visibility 1/0 = both shoulder scores > 0.3) inserted at 17 and
   MMPose order remapped to OpenPose-18.
4. Output: the official frame dict (see :mod:`.formats`): coordinates / (W, H), ``subset`` = row index
   where score > 0.3 else -1, faces = points 24..91, hands = 92..112 (left) then 113..133 (right).

The image is given to the networks as passed in: the official video path feeds RGB frames, so
pass RGB ``uint8 [H, W, 3]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from ..errors import CheckpointError, InputError

DET_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"
MODELS_SUBDIRS = ("echomimic_v2/dwpose", "dwpose", "echomimic_v2", "")

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])
_MMPOSE_IDX = [17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]
_OPENPOSE_IDX = [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]


def find_dwpose_files(model_dir: str | Path | None = None, models_root: str | Path | None = None,
                      det_name: str = DET_FILE, pose_name: str = POSE_FILE) -> tuple[Path, Path]:
    """``(detector, pose)`` paths from ``model_dir`` or a ComfyUI ``models_root`` (searched in
    ``MODELS_SUBDIRS``); both files must be in one folder. The search is the pose-backend registry's
    (:meth:`~echomimic_core.pose.backends.PoseBackend.find_files`); raises
    :class:`ModelFilesNotFoundError` naming the files and where to put them."""
    from dataclasses import replace

    from .backends import get_backend

    backend = replace(get_backend("dwpose"), model_files=(det_name, pose_name))
    det, pose = backend.find_files(model_dir, [models_root] if models_root is not None else [])
    return det, pose


def letterbox(img: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Top-left letterbox to ``size`` = (h, w), pad 114 -> (CHW float32, ratio)."""
    h, w = img.shape[:2]
    r = min(size[0] / h, size[1] / w)
    nh, nw = int(h * r), int(w * r)
    padded = np.full((size[0], size[1], 3), 114, dtype=np.uint8)
    padded[:nh, :nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    return np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32), r


def yolox_decode(raw: np.ndarray, size: tuple[int, int], strides: Sequence[int] = (8, 16, 32)) -> np.ndarray:
    """Grid decode of raw YOLOX outputs ``[A, 5+C]`` for an input of ``size`` = (h, w)."""
    grids, expanded = [], []
    for s in strides:
        hs, ws = size[0] // s, size[1] // s
        xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        expanded.append(np.full((hs * ws, 1), s))
    grid, stride = np.concatenate(grids, 0), np.concatenate(expanded, 0)
    if raw.shape[0] != grid.shape[0]:
        raise CheckpointError(f"detector output has {raw.shape[0]} anchors, expected {grid.shape[0]} for a "
                              f"{size[1]}x{size[0]} input with strides {tuple(strides)}")
    out = raw.astype(np.float64).copy()
    out[:, :2] = (out[:, :2] + grid) * stride
    out[:, 2:4] = np.exp(out[:, 2:4]) * stride
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy NMS with the +1 pixel area convention of the official code."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = iw * ih
        ovr = inter / (areas[i] + areas[rest] - inter)
        order = rest[ovr <= iou]
    return keep


def person_boxes(pred: np.ndarray, ratio: float, nms_iou: float = 0.45, score_thr: float = 0.1,
                 keep_thr: float = 0.3) -> np.ndarray:
    """Decoded predictions ``[A, 5+C]`` -> person boxes ``[n, 4]`` (x1, y1, x2, y2) in image pixels."""
    boxes = np.empty((pred.shape[0], 4))
    boxes[:, 0] = pred[:, 0] - pred[:, 2] / 2
    boxes[:, 1] = pred[:, 1] - pred[:, 3] / 2
    boxes[:, 2] = pred[:, 0] + pred[:, 2] / 2
    boxes[:, 3] = pred[:, 1] + pred[:, 3] / 2
    boxes /= ratio
    scores = pred[:, 4:5] * pred[:, 5:]
    out = []
    for c in range(scores.shape[1]):
        mask = scores[:, c] > score_thr
        if not mask.any():
            continue
        b, s = boxes[mask], scores[mask, c]
        for i in nms(b, s, nms_iou):
            if c == 0 and s[i] > keep_thr:
                out.append(b[i])
    return np.array(out).reshape(-1, 4)


# ------------------------------------------------------------------ pose
def box_center_scale(box: np.ndarray, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) * 0.5, (y1 + y2) * 0.5]), np.array([x2 - x1, y2 - y1]) * padding


def fix_aspect(scale: np.ndarray, aspect: float) -> np.ndarray:
    w, h = scale
    return np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])


def warp_matrix(center: np.ndarray, scale: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Affine map (no rotation) of the box (center, scale) onto an ``out_w`` x ``out_h`` image."""
    src_w = scale[0]
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + np.array([0.0, -0.5 * src_w])
    d = src[0] - src[1]
    src[2] = src[1] + np.array([-d[1], d[0]])
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = dst[0] + np.array([0.0, -0.5 * out_w])
    d = dst[0] - dst[1]
    dst[2] = dst[1] + np.array([-d[1], d[0]])
    return cv2.getAffineTransform(src, dst)


def simcc_decode(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """SimCC argmax: ``[N, K, Wx]``, ``[N, K, Wy]`` -> locations ``[N, K, 2]`` (input pixels), scores ``[N, K]``."""
    N, K, _ = simcc_x.shape
    sx, sy = simcc_x.reshape(N * K, -1), simcc_y.reshape(N * K, -1)
    locs = np.stack((sx.argmax(1), sy.argmax(1)), -1).astype(np.float32)
    vals = np.minimum(sx.max(1), sy.max(1))
    locs[vals <= 0.0] = -1
    return locs.reshape(N, K, 2) / split_ratio, vals.reshape(N, K)


def to_openpose(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """133 COCO-WholeBody points -> 134 with the neck and OpenPose-18 body order."""
    info = np.concatenate((keypoints, scores[..., None]), -1)
    neck = info[:, [5, 6]].mean(axis=1)
    neck[:, 2:4] = np.logical_and(info[:, 5, 2:4] > 0.3, info[:, 6, 2:4] > 0.3).astype(int)
    info = np.insert(info, 17, neck, axis=1)
    info[:, _OPENPOSE_IDX] = info[:, _MMPOSE_IDX]
    return info[..., :2], info[..., 2]


def to_frame(keypoints: np.ndarray, scores: np.ndarray, height: int, width: int) -> dict:
    """``[n, 134, 2]`` pixel keypoints + scores -> the official frame dict (normalised)."""
    kp = keypoints.astype(np.float64).copy()
    sc = scores.astype(np.float64)
    n = kp.shape[0]
    kp[..., 0] /= float(width)
    kp[..., 1] /= float(height)
    subset = np.where(sc[:, :18] > 0.3, 18 * np.arange(n)[:, None] + np.arange(18)[None], -1).astype(np.float64)
    return {"bodies": {"candidate": kp[:, :18].reshape(n * 18, 2), "subset": subset, "score": sc[:, :18].copy()},
            "hands": np.concatenate([kp[:, 92:113], kp[:, 113:]], 0),
            "hands_score": np.concatenate([sc[:, 92:113], sc[:, 113:]], 0),
            "faces": kp[:, 24:92].copy(), "faces_score": sc[:, 24:92].copy()}


def _static_hw(shape, default: tuple[int, int]) -> tuple[int, int]:
    dims = list(shape)[2:4]
    if len(dims) == 2 and all(isinstance(d, int) and d > 0 for d in dims):
        return int(dims[0]), int(dims[1])
    return default


class DWPoseExtractor:
    """DWPose on local onnx files: ``DWPoseExtractor(model_dir)(rgb_uint8) -> frame dict``.

    ``model_dir``: folder with ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx``; or ``models_root``: a
    ComfyUI models folder searched as described in :func:`find_dwpose_files`. ``providers``: onnxruntime
    providers (default: CUDA when onnxruntime has it, then CPU). Sessions open on construction;
    missing files raise :class:`ModelFilesNotFoundError`, unreadable ones :class:`CheckpointError`.
    """

    def __init__(self, model_dir: str | Path | None = None, models_root: str | Path | None = None,
                 providers: Sequence[str] | None = None, det_name: str = DET_FILE, pose_name: str = POSE_FILE):
        import onnxruntime as ort

        self.det_path, self.pose_path = find_dwpose_files(model_dir, models_root, det_name, pose_name)
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.det = ort.InferenceSession(str(self.det_path), sess_options=opts, providers=list(providers))
            self.pose = ort.InferenceSession(str(self.pose_path), sess_options=opts, providers=list(providers))
        except Exception as exc:
            raise CheckpointError(f"cannot open the DWPose onnx files {self.det_path}, {self.pose_path}: {exc}") from None
        self.det_size = _static_hw(self.det.get_inputs()[0].shape, (640, 640))
        self.pose_hw = _static_hw(self.pose.get_inputs()[0].shape, (384, 288))

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Person boxes ``[n, 4]`` (x1, y1, x2, y2, pixels)."""
        inp, r = letterbox(image, self.det_size)
        raw = self.det.run(None, {self.det.get_inputs()[0].name: inp[None]})[0]
        pred = yolox_decode(np.asarray(raw)[0], self.det_size)
        return person_boxes(pred, r)

    def keypoints(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """133 whole-body keypoints per box (pixels) and scores."""
        h_in, w_in = self.pose_hw
        if len(boxes) == 0:
            boxes = np.array([[0, 0, image.shape[1], image.shape[0]]], dtype=np.float64)
        name = self.pose.get_inputs()[0].name
        all_kp, all_sc = [], []
        for box in boxes:
            center, scale = box_center_scale(box)
            scale = fix_aspect(scale, w_in / h_in)
            crop = cv2.warpAffine(image, warp_matrix(center, scale, w_in, h_in), (w_in, h_in), flags=cv2.INTER_LINEAR)
            x = ((crop - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
            simcc_x, simcc_y = self.pose.run(None, {name: x})[:2]
            kp, sc = simcc_decode(np.asarray(simcc_x), np.asarray(simcc_y))
            kp = kp / np.array([w_in, h_in]) * scale + center - scale / 2
            all_kp.append(kp[0])
            all_sc.append(sc[0])
        return np.array(all_kp), np.array(all_sc)

    def __call__(self, image: np.ndarray) -> dict:
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise InputError(f"DWPose needs an RGB uint8 image [H, W, 3], got {img.dtype} {img.shape}")
        kp, sc = self.keypoints(img, self.detect(img))
        if kp.shape[1] != 133:
            raise CheckpointError(f"the pose model returned {kp.shape[1]} keypoints, expected 133 (COCO-WholeBody)")
        kp, sc = to_openpose(kp, sc)
        return to_frame(kp, sc, img.shape[0], img.shape[1])

    def extract(self, frames: Iterable[np.ndarray]) -> list[dict]:
        """One frame dict per RGB frame (iterate lazily over a video reader to save memory)."""
        return [self(f) for f in frames]
