"""Download-free pose backend: mediapipe 0.10.21 Holistic (legacy ``mp.solutions`` API, models
shipped inside the wheel; ``model_complexity=1`` only - 0 and 2 would download) mapped onto the
DWPose/official frame layout.

Mapping (one person; all coordinates normalised to the image, missing points -1 with score 0):

* **body, OpenPose-18** from the 33 BlazePose landmarks (both use the person's own left/right):
  0 nose<-0, 1 neck = mean of the shoulders 11/12 (score 1 if both shoulder visibilities > 0.3
  else 0, like DWPose), 2 R-shoulder<-12, 3 R-elbow<-14, 4 R-wrist<-16, 5 L-shoulder<-11,
  6 L-elbow<-13, 7 L-wrist<-15, 8 R-hip<-24, 9 R-knee<-26, 10 R-ankle<-28, 11 L-hip<-23,
  12 L-knee<-25, 13 L-ankle<-27, 14 R-eye<-5, 15 L-eye<-2, 16 R-ear<-8, 17 L-ear<-7.
  Scores = BlazePose ``visibility``; ``subset`` = index where score > 0.3 else -1.
* **hands**: Holistic's ``left_hand_landmarks`` / ``right_hand_landmarks`` are the person's left /
  right hand (checked against the pose wrists), stored left first then right as DWPose does. The
  21 landmarks are in the same order as DWPose's hand points. mediapipe gives no per-point
  confidence, so a found hand gets score 1.0 on every point; a hand not found is -1 / 0.
* **face**: the 468-point face mesh is sampled at 68 mesh vertices that correspond to the iBUG-68
  points (:data:`MESH_TO_IBUG68`: jaw 0-16 from the image-left side, brows, nose, eyes, outer and
  inner lips), score 1.0 each; no face -> -1 / 0. The mesh contour is not the exact iBUG jaw
  line, so jaw points can sit a few pixels inside DWPose's.
"""

from __future__ import annotations

import weakref
from typing import Iterable

import numpy as np

from ..errors import BackendUnavailableError, InputError
from .formats import N_BODY, empty_frame

POSE_TO_OPENPOSE = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
MESH_TO_IBUG68 = (
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,  # jaw 0-16
    70, 63, 105, 66, 107,  # brow 17-21 (image left)
    336, 296, 334, 293, 300,  # brow 22-26
    168, 197, 5, 4,  # nose bridge 27-30
    75, 97, 2, 326, 305,  # nostrils 31-35
    33, 160, 158, 133, 153, 144,  # eye 36-41 (image left)
    362, 385, 387, 263, 373, 380,  # eye 42-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips 48-59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips 60-67
)


def _import_mediapipe():
    try:
        import mediapipe as mp
        holistic = mp.solutions.holistic  # noqa: F841 - the legacy API ships the models
    except (ImportError, AttributeError):
        raise BackendUnavailableError(
            "the mediapipe pose backend needs mediapipe 0.10.21 (its wheel ships the hand/pose/face models; "
            "versions >= 0.10.30 have no 'solutions' API and would need downloaded .task files): "
            "pip install mediapipe==0.10.21 (requires numpy<2), or use the DWPose backend") from None
    return mp


def _landmarks(lms, with_visibility: bool = False) -> np.ndarray:
    if with_visibility:
        return np.array([[p.x, p.y, p.visibility] for p in lms.landmark], dtype=np.float64)
    return np.array([[p.x, p.y] for p in lms.landmark], dtype=np.float64)


class MediaPipeExtractor:
    """``MediaPipeExtractor()(rgb_uint8) -> frame dict`` in the official layout (one person).

    ``static_image_mode=True`` treats every call independently (use ``False`` for video frames in
    order, which enables tracking). ``min_detection_confidence`` is passed to Holistic. Use as a
    context manager or call :meth:`close` to free the graph.
    """

    def __init__(self, static_image_mode: bool = True, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5):
        mp = _import_mediapipe()
        self._holistic = mp.solutions.holistic.Holistic(
            static_image_mode=static_image_mode, model_complexity=1, smooth_landmarks=not static_image_mode,
            refine_face_landmarks=False, min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence)
        # A mediapipe graph closed only during interpreter shutdown can hang the process on exit;
        # weakref.finalize closes it when the extractor is collected or, at the latest, at exit
        # while the interpreter is still whole.
        self._finalizer = weakref.finalize(self, self._holistic.close)

    def close(self) -> None:
        self._finalizer()
        self._holistic = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


    def __call__(self, image: np.ndarray) -> dict:
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise InputError(f"mediapipe needs an RGB uint8 image [H, W, 3], got {img.dtype} {img.shape}")
        if self._holistic is None:
            raise InputError("this MediaPipeExtractor was closed")
        res = self._holistic.process(np.ascontiguousarray(img))
        return self.to_frame(res)

    @staticmethod
    def to_frame(res) -> dict:
        """Holistic result -> official frame dict (see the module docstring for the mapping)."""
        frame = empty_frame(1)
        if res.pose_landmarks is not None:
            P = _landmarks(res.pose_landmarks, with_visibility=True)
            cand = frame["bodies"]["candidate"]
            score = frame["bodies"]["score"][0]
            for k, src in enumerate(POSE_TO_OPENPOSE):
                if src is None:
                    cand[k] = (P[11, :2] + P[12, :2]) / 2
                    score[k] = float(P[11, 2] > 0.3 and P[12, 2] > 0.3)
                else:
                    cand[k] = P[src, :2]
                    score[k] = P[src, 2]
            frame["bodies"]["subset"][0] = np.where(score > 0.3, np.arange(N_BODY), -1)
        for slot, lms in ((0, res.left_hand_landmarks), (1, res.right_hand_landmarks)):
            if lms is not None:
                frame["hands"][slot] = _landmarks(lms)[:21]
                frame["hands_score"][slot] = 1.0
        if res.face_landmarks is not None:
            F = _landmarks(res.face_landmarks)
            frame["faces"][0] = F[list(MESH_TO_IBUG68)]
            frame["faces_score"][0] = 1.0
        return frame

    def extract(self, frames: Iterable[np.ndarray]) -> list[dict]:
        """One frame dict per RGB frame."""
        return [self(f) for f in frames]
