"""Faces for CSIM, E-FID and SyncNet: landmarks from the pose extractor, 5-point alignment, ArcFace.

Landmarks: the pack's pose extractors (DWPose / mediapipe, :mod:`echomimic_core.pose`) already give
the iBUG-68 face points of each frame, so no extra face detector is needed. The main person is the
one with the highest mean body score (the official preprocessing's choice); a frame whose face
points have a mean score below ``MIN_FACE_SCORE`` counts as "no face" and is skipped by the face
metrics (the count is reported).

Five points (ArcFace order, image left to right): eye centres (iBUG 36-41 and 42-47), nose tip (30),
mouth corners (48, 54). Alignment is the least-squares similarity transform (Umeyama 1991) onto
the standard 112x112 ArcFace template (insightface ``arcface_dst``), scaled for other crop sizes.

CSIM: cosine similarity of ArcFace embeddings (an insightface recognition onnx, run with
onnxruntime: input ``[n, 3, 112, 112]`` RGB, ``(x - 127.5) / 127.5``) between the reference image's
face and each generated frame's face, averaged over frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import CheckpointError, InputError

MIN_FACE_SCORE = 0.3
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
"""The 5-point target of ArcFace's 112x112 crops (insightface ``face_align.arcface_dst``)."""


def main_person(frame: dict) -> int:
    scores = np.asarray(frame["bodies"]["score"], dtype=np.float64).reshape(-1, 18)
    return int(np.argmax(scores.mean(1))) if len(scores) else 0


def face_points(frame: dict, width: int, height: int) -> np.ndarray | None:
    """The main person's 68 face points in pixels ``[68, 2]``, or None when no face was found."""
    faces = np.asarray(frame.get("faces", np.zeros((0, 68, 2))), dtype=np.float64).reshape(-1, 68, 2)
    if not len(faces):
        return None
    p = min(main_person(frame), len(faces) - 1)
    score = np.asarray(frame.get("faces_score", np.ones((len(faces), 68))), dtype=np.float64).reshape(-1, 68)[p]
    if score.mean() < MIN_FACE_SCORE:
        return None
    return faces[p] * np.array([width, height])


def five_points(face68: np.ndarray) -> np.ndarray:
    """iBUG-68 pixel points -> ``[5, 2]`` (eye, eye, nose tip, mouth corner, mouth corner; image left first)."""
    f = np.asarray(face68, dtype=np.float64)
    return np.stack([f[36:42].mean(0), f[42:48].mean(0), f[30], f[48], f[54]])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares similarity (rotation, uniform scale, shift) mapping src to dst."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    cov = d0.T @ s0 / len(src)
    u, sv, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ d @ vt
    var = (s0 ** 2).sum() / len(src)
    scale = float((sv * np.diag(d)).sum() / var) if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = md - scale * rot @ ms
    return m


def align_face(image: np.ndarray, points5: np.ndarray, size: int = 112, margin: float = 0.0) -> np.ndarray:
    """Crop ``size`` x ``size`` RGB with the 5 points on the ArcFace template (scaled to ``size``;
    ``margin`` > 0 zooms out by that fraction, e.g. for whole-head crops)."""
    import cv2

    tmpl = ARCFACE_TEMPLATE * (size / 112.0)
    if margin:
        c = np.array([size / 2.0, size / 2.0])
        tmpl = c + (tmpl - c) / (1.0 + margin)
    m = similarity_transform(points5, tmpl)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


class ArcFaceONNX:
    """``embed(faces_uint8 [n, 112, 112, 3] RGB) -> [n, d]`` unit vectors, with onnxruntime."""

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None):
        import onnxruntime as ort

        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"cannot open the ArcFace onnx {path}: {exc}") from None
        shape = self.session.get_inputs()[0].shape
        self.size = int(shape[2]) if isinstance(shape[2], int) else 112

    def embed(self, faces: np.ndarray) -> np.ndarray:
        if faces.ndim != 4 or faces.shape[-1] != 3:
            raise InputError(f"ArcFace needs [n, H, W, 3] face crops, got {faces.shape}")
        x = ((faces.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
        name = self.session.get_inputs()[0].name
        out = np.concatenate([self.session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
        out = out.reshape(len(out), -1).astype(np.float64)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def csim(ref_embedding: np.ndarray, frame_embeddings: np.ndarray) -> float:
    """Mean cosine similarity between one reference embedding and the frames' embeddings (unit vectors)."""
    if not len(frame_embeddings):
        return float("nan")
    return float((frame_embeddings @ np.asarray(ref_embedding).reshape(-1)).mean())
