"""The gesture package's entry points: :func:`poses_for` (audio / library / still), the gesture model
loader and the stand-in reference pose (see the package docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..pose.formats import N_BODY, PoseSequence
from .constants import DEFAULT_MODEL_DIR, MODES
from .library import JOIN_STEP, pose_library, still_hands
from .model import GestureModel, frame_audio
from .motion import Anchor, NUM_POINTS, from_motion
from .speech import speech_envelope, speech_pauses


def load_gesture_model(folder: str | Path | None = None) -> GestureModel:
    """The gesture model in ``folder`` (default: the embedded one)."""
    return GestureModel.load(DEFAULT_MODEL_DIR if folder is None else folder)


def default_reference(model: GestureModel) -> dict:
    """A stand-in reference pose when none could be detected: the training set's average neck,
    shoulder width and rest arm pose (``config.json`` ``default_body``), with no head or face points.
    Good enough to place gestures on a figure framed like the training data; a detected reference
    pose is always better."""
    body = model.info.get("default_body") if hasattr(model, "info") else None
    if not body:
        raise InputError("no reference pose was given and the gesture model has no default body layout; "
                         "give the reference person's pose (a pose file or an extractor result)")
    neck, sw = np.asarray(body["neck"], dtype=np.float64), float(body["shoulder_width"])
    motion = model.anchor_mean.double().numpy().reshape(NUM_POINTS, 2)
    pts = from_motion(motion[None], neck[None], np.array([sw]))[0]
    cand = -np.ones((N_BODY, 2))
    score = np.zeros(N_BODY)
    cand[1], cand[2], cand[5] = neck, neck + [-sw / 2, 0], neck + [sw / 2, 0]
    cand[6], cand[3] = pts[42], pts[43]
    cand[7], cand[4] = pts[0], pts[21]
    score[[1, 2, 3, 4, 5, 6, 7]] = 0.9
    return {"bodies": {"candidate": cand, "subset": np.where(score > 0.3, np.arange(N_BODY), -1.0)[None],
                       "score": score[None]},
            "hands": pts[:42].reshape(2, 21, 2), "hands_score": np.full((2, 21), 0.9),
            "faces": np.zeros((0, 68, 2)), "faces_score": np.zeros((0, 68))}


def poses_for(reference: dict | None, audio_features=None, num_frames: int | None = None, mode: str = "audio", *,
              waveform=None, model: GestureModel | None = None, seed: int = 0, amount: float = 1.0,
              steps: int | None = None, library: Sequence[PoseSequence] | None = None,
              size: Sequence[int] = (1, 1), fps: float = 24.0, join_step: float = JOIN_STEP,
              progress=None) -> PoseSequence:
    """Hand poses for ``num_frames`` video frames without a driving pose sequence.

    ``reference``: the reference person's pose (a frame dict normalised to the reference image, e.g.
    from an extractor or frame 0 of a pose file); ``None`` = :func:`default_reference` (audio mode)
    or the library's first frame (library mode). ``size`` = (H, W) of the reference image (only its
    aspect matters). Modes:

    * ``"audio"``: the gesture ``model`` (default: embedded) on ``audio_features`` (the
      ``AudioFeatures`` the sampler uses, or its chunks ``[F, tokens, 384]``), ``seed`` picks the
      performance, ``amount`` scales the motion around the reference pose (0 = still, 1 = as trained);
    * ``"library"``: :func:`pose_library` over ``library`` clips, cut at the pauses of ``waveform``
      (16 kHz mono) when given;
    * ``"still"``: :func:`still_hands`.

    Returns a full-canvas :class:`PoseSequence` normalised to the reference image.
    """
    if mode not in MODES:
        raise InputError(f"unknown gesture mode {mode!r}; choose one of {', '.join(MODES)}")
    chunks = getattr(audio_features, "chunks", audio_features)
    if num_frames is None:
        num_frames = getattr(audio_features, "num_frames", None)
        if num_frames is None and chunks is not None:
            num_frames = len(chunks)
    if num_frames is None or int(num_frames) < 1:
        raise InputError("poses_for needs num_frames >= 1 (or audio features to take it from)")
    n = int(num_frames)
    if not amount >= 0:
        raise InputError(f"motion amount must be >= 0, got {amount}")
    if mode == "still":
        if reference is None:
            raise InputError("still hands need the reference person's pose")
        return still_hands(reference, n, size, fps)
    if mode == "library":
        if not library:
            raise InputError("library mode needs at least one pose clip (the pose library)")
        pauses = None
        if waveform is not None:
            pauses = speech_pauses(speech_envelope(waveform, fps, n))
        return pose_library(library, n, reference, pauses=pauses, seed=seed, size=size, join_step=join_step, fps=fps)
    if chunks is None:
        raise InputError("audio mode needs the audio features (whisper chunks) of the speech")
    model = load_gesture_model() if model is None else model
    audio = frame_audio(chunks, model.config["audio_layers"])
    if len(audio) < n:  # frames past the features' end reuse the last one (as the sampler's windows do)
        audio = audio[np.clip(np.arange(n), 0, len(audio) - 1)]
    anchor = Anchor(default_reference(model) if reference is None else reference, size)
    rest = anchor.filled(model.anchor_mean.double().numpy())
    motion = model.sample(audio[:n], rest, seed=seed, amount=amount, steps=steps, progress=progress)
    return PoseSequence(anchor.frames(motion), fps=fps)
