"""From file-level inputs (reference image, optional reference pose file, pose-library paths) to a
pose sequence: the glue the ``generate`` CLI and the nodes share, kept out of the CLI so the command
itself only gains a few lines."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import EchoMimicError, InputError
from ..pose.formats import PoseSequence
from ..pose.io import load_pose_sequence


def reference_pose(image: Any = None, pose_file: str | Path | None = None, extractor=None):
    """The reference person's pose and the (H, W) its coordinates are normalised to.

    ``pose_file``: frame 0 of that pose sequence (e.g. the frame the reference image was taken
    from). Otherwise ``extractor`` (any callable rgb -> frame, e.g. ``DWPoseExtractor``), else the
    download-free ``MediaPipeExtractor``, runs on ``image``. Returns ``(frame | None, (H, W))``;
    ``None`` when no person with both shoulders was found (a warning says so).
    """
    from ..pipeline import load_reference_image

    size = (1, 1)
    if image is not None:
        img = np.asarray(load_reference_image(image))
        size = img.shape[:2]
    if pose_file is not None:
        seq = load_pose_sequence(pose_file)
        if len(seq) == 0:
            raise InputError(f"the reference pose file {pose_file} has no frames")
        return seq[0], size
    if image is None:
        return None, size
    try:
        if extractor is None:
            from ..pose import MediaPipeExtractor

            extractor = MediaPipeExtractor()
        frame = extractor(img)
        from .motion import Anchor

        Anchor(frame, size)  # raises when there is no usable upper body
        return frame, size
    except EchoMimicError as exc:
        warnings.warn(f"no reference pose detected in the reference image ({exc}); gestures are placed on an "
                      "average body layout - give the reference pose (--reference-pose) for exact placement")
        return None, size


def load_library(paths: Sequence[str | Path]) -> list[PoseSequence]:
    """Pose-library clips: every pose file / official folder in ``paths`` (a folder holding pose
    sub-folders or ``.npz``/``.json`` files counts as a library of them)."""
    clips = []
    for p in paths:
        p = Path(p)
        if p.is_dir() and not any(p.glob("*.npy")):
            members = sorted(q for q in p.iterdir() if q.is_dir() or q.suffix in (".npz", ".json"))
            clips.extend(load_pose_sequence(q) for q in members)
        else:
            clips.append(load_pose_sequence(p))
    if not clips:
        raise InputError(f"no pose clips found in {', '.join(map(str, paths))}")
    return clips


def poses_from_inputs(image: Any, audio_features, num_frames: int, mode: str = "audio", *, waveform=None,
                      reference_pose_file=None, library_paths: Sequence[str | Path] = (), seed: int = 0,
                      amount: float = 1.0, model_dir=None, fps: float = 24.0) -> PoseSequence:
    """:func:`~echomimic_core.gesture.poses_for` from file-level inputs (the ``generate`` CLI's)."""
    from .poses import load_gesture_model, poses_for

    if mode == "library" and not library_paths:
        raise InputError("--gestures library needs --pose-library PATH (pose files or folders)")
    ref, size = reference_pose(image, reference_pose_file)
    if ref is None and mode == "still":
        raise InputError("still hands need the reference person's pose: none was detected in the image; "
                         "give --reference-pose FILE")
    library = load_library(library_paths) if mode == "library" else None
    model = load_gesture_model(model_dir) if mode == "audio" else None
    return poses_for(ref, audio_features, num_frames, mode, waveform=waveform, model=model, seed=seed,
                     amount=amount, library=library, size=size, fps=fps)
