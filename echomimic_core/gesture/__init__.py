"""Pose sequences from a reference image + speech alone: gestures generated from the audio, a pose
library cut at speech pauses, or still hands.

Public API
----------
``poses_for(reference, audio_features, num_frames, mode="audio"|"library"|"still", ...) -> PoseSequence``
    the one entry point the CLI and nodes call (see its docstring).
``load_gesture_model(folder=None)`` - a :class:`GestureModel` (default: the embedded one in
    ``echomimic_core/assets/gesture_model``, trained on the synthetic talking figures with the
    embedded demo model's audio encoder; ``train/gesture.py`` trains one for other data/encoders).
``still_hands(reference, n)``, ``pose_library(clips, n, reference, pauses=...)`` - plain numpy.
``poses_from_inputs(image, audio_features, n, mode, reference_pose_file=..., library_paths=...)`` -
    the same from file-level inputs (reference pose detected with mediapipe when no file is given);
    ``reference_pose(image, pose_file)``, ``load_library(paths)``.
``speech_envelope``, ``speech_onsets``, ``speech_pauses`` - speech timing from the waveform.
``metrics`` - beat alignment, diversity, jitter, FGD-style Frechet distance.
Motion representation: :mod:`.motion` (arm points in body coordinates around the reference's own pose).

Names are exported lazily (PEP 562), like :mod:`echomimic_core.models`: the CLI's ``--help`` reads
:mod:`.constants` without importing torch (the gesture model's module needs it).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "MODES": "constants", "DEFAULT_MODEL_DIR": "constants",
    "poses_for": "poses", "load_gesture_model": "poses", "default_reference": "poses",
    "GestureModel": "model", "frame_audio": "model",
    "Anchor": "motion", "MOTION_DIM": "motion", "NUM_POINTS": "motion",
    "still_hands": "library", "pose_library": "library", "clip_motion": "library", "JOIN_STEP": "library",
    "speech_envelope": "speech", "speech_onsets": "speech", "speech_pauses": "speech",
    "poses_from_inputs": "inputs", "reference_pose": "inputs", "load_library": "inputs",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
