"""Driving video -> pose sequence, with either extractor.

The official pipeline re-encodes the driving video to 24 fps, runs DWPose on every RGB frame, then
computes one upper-body box for the whole clip and saves each frame's keypoints normalised to it
(:func:`~echomimic_core.pose.align.sequence_from_detections`). Decoding is left to the caller
(PyAV); pass frames as an iterable of RGB ``uint8 [H, W, 3]`` arrays, e.g. a generator, so only
keypoints (about 4 KB per frame) are kept in memory.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from ..errors import InputError
from .align import sequence_from_detections
from .formats import BASE_SIZE, PoseSequence


def official_frame_stride(avg_fps: float, target_fps: float = 24.0) -> int:
    """Frame step the official reader uses on a video of ``avg_fps``: ``max(1, int(avg_fps / 24))``."""
    return max(1, int(float(avg_fps) / float(target_fps)))


def extract_sequence(frames: Iterable[np.ndarray], extractor: Callable[[np.ndarray], dict], fps: float = 24.0,
                     max_size: int = BASE_SIZE, bottom_margin: float = 0.05, align: bool = True,
                     progress: Callable[[int], None] | None = None) -> tuple[PoseSequence, dict | None]:
    """Run ``extractor`` (a :class:`DWPoseExtractor` or :class:`MediaPipeExtractor`) on every frame.

    ``align=True`` (official preprocessing): one upper-body box for the clip, keypoints normalised to
    it, ``draw_pose_params`` set; returns ``(sequence, params)`` with the box in ``params``
    (``video_params`` is the pixel crop to apply to the video frames). ``align=False``: keypoints
    stay normalised to the full frame (full-canvas params); returns ``(sequence, None)``.
    ``progress(k)`` is called after each frame.
    """
    detections, size = [], None
    for k, frame in enumerate(frames):
        arr = np.asarray(frame)
        if arr.ndim != 3:
            raise InputError(f"video frame {k} is not an [H, W, 3] image: shape {arr.shape}")
        if size is None:
            size = arr.shape[:2]
        elif arr.shape[:2] != size:
            raise InputError(f"video frame {k} is {arr.shape[1]}x{arr.shape[0]}, the first was {size[1]}x{size[0]}")
        det = extractor(arr)
        det["num"] = k
        detections.append(det)
        if progress is not None:
            progress(k)
    if not detections:
        raise InputError("the driving video has no frames")
    if not align:
        return PoseSequence.from_frames(detections, fps=fps), None
    return sequence_from_detections(detections, size[0], size[1], max_size, bottom_margin, fps)
