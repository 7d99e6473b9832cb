"""The per-frame pose layout of the official EchoMimicV2 files and the :class:`PoseSequence` container.

One frame is a plain dict, exactly the layout the official DWPose wrapper produces and the demo
``.npy`` files store (all coordinates normalised to [0, 1] of the canvas they are drawn on; values a
little outside [0, 1] occur, and points a detector missed are <= 0 and are skipped when drawing)::

    {
      "bodies": {"candidate": float64 [n*18, 2],   # OpenPose-18 order, person after person
                 "subset":    float64 [n, 18],     # row index into candidate, or -1 (score <= 0.3)
                 "score":     float64 [n, 18]},
      "hands":       float64 [2n, 21, 2],          # all persons' LEFT hands first, then all RIGHT hands
      "hands_score": float64 [2n, 21],
      "faces":       float64 [n, 68, 2],           # iBUG-68 layout
      "faces_score": float64 [n, 68],
      # optional:
      "num": int,                                  # frame index in its source
      "draw_pose_params": [imh, imw, rb, re, cb, ce],   # canvas geometry on a 768x768 base
    }

``draw_pose_params`` say where the pose canvas sits inside the 768x768 output: the pose is drawn at
``(imh, imw)`` and pasted into rows ``rb:re`` and columns ``cb:ce``. For other output sizes they are
scaled by H/768 and W/768 (:func:`scale_draw_params`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import InputError

BASE_SIZE = 768
"""The output size that ``draw_pose_params`` are expressed in (the official inference size)."""
FULL_CANVAS = (768, 768, 0, 768, 0, 768)
"""``draw_pose_params`` of a pose that covers the whole output (all official demo sequences)."""
DEFAULT_REF_W = 800
"""Short side of the internal drawing canvas used by the official inference drawer."""

N_BODY, N_HAND, N_FACE = 18, 21, 68

MAX_ABS_COORD = 100.0
"""Largest |coordinate| accepted (normalised units: the canvas is [0, 1]; a point 100 canvases away is
damage, and drawing it would overflow OpenCV's integer coordinates)."""
MAX_ABS_SCORE = 1e3
"""Largest |score| accepted (detectors give [0, 1]; the drawer only compares scores with 0.3)."""
MAX_REF_W = 8192
"""Largest drawing-canvas short side accepted (the official drawer uses 800)."""

BODY_NAMES = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
              "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
HEAD_BODY_POINTS = (0, 14, 15, 16, 17)
"""OpenPose-18 indices of the head (nose, eyes, ears)."""
LIPS_FACE_POINTS = tuple(range(48, 68))
"""iBUG-68 indices of the mouth (outer 48-59, inner 60-67)."""


def _arr(value: Any, shape_tail: tuple[int, ...], name: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"pose frame field {name!r} is not numeric: {exc}") from None
    if a.size == 0:
        return a.reshape((0,) + shape_tail)
    if a.ndim == len(shape_tail):  # one person / one hand without the leading axis
        a = a[None]
    if a.shape[1:] != shape_tail:
        raise InputError(f"pose frame field {name!r} has shape {a.shape}, expected (n, {', '.join(map(str, shape_tail))})")
    return a


def validate_draw_params(params: Any) -> tuple[int, int, int, int, int, int]:
    """Return ``draw_pose_params`` as a 6-tuple of ints, or raise :class:`InputError`."""
    try:
        vals = tuple(int(v) for v in params)
    except (TypeError, ValueError):
        raise InputError(f"draw_pose_params must be 6 integers [imh, imw, rb, re, cb, ce], got {params!r}") from None
    if len(vals) != 6:
        raise InputError(f"draw_pose_params must be 6 integers [imh, imw, rb, re, cb, ce], got {params!r}")
    imh, imw, rb, re, cb, ce = vals
    if imh <= 0 or imw <= 0 or re - rb != imh or ce - cb != imw or rb < 0 or cb < 0:
        raise InputError(f"inconsistent draw_pose_params {list(vals)}: need re-rb == imh > 0, ce-cb == imw > 0, rb, cb >= 0")
    return vals


def normalize_frame(frame: Any) -> dict:
    """Check one frame and return a new dict in the official layout with float64 arrays.

    Accepts the official dict (as loaded from a demo ``.npy``); missing parts become empty arrays
    (zero persons / hands / faces). Raises :class:`InputError` on anything malformed.
    """
    if not isinstance(frame, dict):
        raise InputError(f"a pose frame must be a dict in the official layout, got {type(frame).__name__}")
    bodies = frame.get("bodies", {}) or {}
    if not isinstance(bodies, dict):
        raise InputError("pose frame field 'bodies' must be a dict with candidate/subset/score")
    try:
        cand = np.asarray(bodies.get("candidate", []), dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError) as exc:
        raise InputError(f"pose frame field 'bodies.candidate' is not an (m, 2) array: {exc}") from None
    subset = _arr(bodies.get("subset", np.zeros((0, N_BODY))), (N_BODY,), "bodies.subset")
    if "score" in bodies:
        score = _arr(bodies["score"], (N_BODY,), "bodies.score")
    else:  # derive a score from the subset (visible -> 1)
        score = (subset >= 0).astype(np.float64)
    if cand.shape[0] % N_BODY:
        raise InputError(f"bodies.candidate has {cand.shape[0]} rows, expected a multiple of 18")
    if subset.shape != score.shape:
        raise InputError(f"bodies.subset {subset.shape} and bodies.score {score.shape} differ")
    if subset.size and (np.nanmax(subset) >= cand.shape[0]):
        raise InputError("bodies.subset refers to a candidate row that does not exist")
    hands = _arr(frame.get("hands", np.zeros((0, N_HAND, 2))), (N_HAND, 2), "hands")
    hands_score = _arr(frame.get("hands_score", np.ones(hands.shape[:2])), (N_HAND,), "hands_score")
    faces = _arr(frame.get("faces", np.zeros((0, N_FACE, 2))), (N_FACE, 2), "faces")
    faces_score = _arr(frame.get("faces_score", np.ones(faces.shape[:2])), (N_FACE,), "faces_score")
    if hands_score.shape != hands.shape[:2]:
        raise InputError(f"hands_score {hands_score.shape} does not match hands {hands.shape}")
    if faces_score.shape != faces.shape[:2]:
        raise InputError(f"faces_score {faces_score.shape} does not match faces {faces.shape}")
    for name, values, bound in (("bodies.candidate", cand, MAX_ABS_COORD), ("hands", hands, MAX_ABS_COORD),
                                ("faces", faces, MAX_ABS_COORD), ("bodies.score", score, MAX_ABS_SCORE),
                                ("hands_score", hands_score, MAX_ABS_SCORE), ("faces_score", faces_score, MAX_ABS_SCORE),
                                ("bodies.subset", subset, float(max(cand.shape[0], 1)))):
        if values.size and not (np.isfinite(values).all() and np.abs(values).max() <= bound):
            raise InputError(f"pose frame field {name!r} holds non-finite or absurd values (|value| up to "
                             f"{bound:g} allowed); the pose file is damaged - re-extract the poses")
    out = {
        "bodies": {"candidate": cand.copy(), "subset": subset.copy(), "score": score.copy()},
        "hands": hands.copy(), "hands_score": hands_score.copy(),
        "faces": faces.copy(), "faces_score": faces_score.copy(),
    }
    if "num" in frame:
        try:
            out["num"] = int(frame["num"])
        except (TypeError, ValueError):
            raise InputError(f"pose frame field 'num' must be an int, got {frame['num']!r}") from None
    if frame.get("draw_pose_params") is not None:
        out["draw_pose_params"] = list(validate_draw_params(frame["draw_pose_params"]))
    return out


def copy_frame(frame: dict) -> dict:
    """Deep copy of a frame dict (arrays copied)."""
    out = {}
    for k, v in frame.items():
        if isinstance(v, dict):
            out[k] = copy_frame(v)
        elif isinstance(v, np.ndarray):
            out[k] = v.copy()
        elif isinstance(v, list):
            out[k] = list(v)
        else:
            out[k] = v
    return out


def empty_frame(num_persons: int = 1) -> dict:
    """A frame with ``num_persons`` persons whose every point is missing (coordinates -1, scores 0)."""
    n = int(num_persons)
    return {
        "bodies": {"candidate": -np.ones((n * N_BODY, 2)), "subset": -np.ones((n, N_BODY)),
                   "score": np.zeros((n, N_BODY))},
        "hands": -np.ones((2 * n, N_HAND, 2)), "hands_score": np.zeros((2 * n, N_HAND)),
        "faces": -np.ones((n, N_FACE, 2)), "faces_score": np.zeros((n, N_FACE)),
    }


def scale_draw_params(params: Sequence[int], height: int, width: int,
                      base: int = BASE_SIZE) -> tuple[int, int, int, int, int, int]:
    """Scale 768-based ``draw_pose_params`` to an output of ``height`` x ``width``.

    Rows scale by height/768 and columns by width/768 (POSE.md, "Output sizes other than 768x768").
    The box edges are rounded and the canvas size is taken from the rounded edges, so the drawing
    always fits its paste box. Full-canvas parameters become ``(H, W, 0, H, 0, W)``.
    """
    imh, imw, rb, re, cb, ce = validate_draw_params(params)
    if height <= 0 or width <= 0:
        raise InputError(f"output size must be positive, got {height}x{width}")
    if height == base and width == base:
        return imh, imw, rb, re, cb, ce
    sy, sx = height / base, width / base
    rb2, re2 = int(round(rb * sy)), int(round(re * sy))
    cb2, ce2 = int(round(cb * sx)), int(round(ce * sx))
    re2, ce2 = min(max(re2, rb2 + 1), height), min(max(ce2, cb2 + 1), width)
    rb2, cb2 = min(rb2, re2 - 1), min(cb2, ce2 - 1)
    return re2 - rb2, ce2 - cb2, rb2, re2, cb2, ce2


@dataclass(eq=False)
class PoseSequence:
    """A hand/body pose sequence: per-frame dicts in the official layout plus canvas parameters.

    * ``frames``: list of frame dicts (see the module docstring). A frame may carry its own
      ``draw_pose_params``; otherwise the sequence's ``draw_params`` apply.
    * ``draw_params``: ``[imh, imw, rb, re, cb, ce]`` on the 768x768 base (default: full canvas).
    * ``fps``: frame rate the sequence was made for (official demo sequences: 24).
    * ``ref_w``: short side of the internal drawing canvas (official inference: 800).

    ``len(seq)`` is the number of frames; ``seq.select(indices)`` returns a new sequence with those
    frames (shared, not copied), e.g. the frames of one sampling window.
    """

    frames: list = field(default_factory=list)
    draw_params: tuple = FULL_CANVAS
    fps: float = 24.0
    ref_w: int = DEFAULT_REF_W

    def __post_init__(self) -> None:
        self.frames = list(self.frames)
        self.draw_params = validate_draw_params(self.draw_params)
        try:
            ref_w = int(self.ref_w)
        except (TypeError, ValueError):
            ref_w = 0
        if not 0 < ref_w <= MAX_REF_W or ref_w != self.ref_w:
            raise InputError(f"pose ref_w (drawing canvas size) must be an integer in 1..{MAX_REF_W}, got "
                             f"{self.ref_w!r}; the official value is {DEFAULT_REF_W}")
        self.ref_w = ref_w

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        return self.frames[index]

    def __iter__(self):
        return iter(self.frames)

    def frame_draw_params(self, index: int) -> tuple[int, int, int, int, int, int]:
        """The ``draw_pose_params`` that apply to frame ``index`` (its own, else the sequence's)."""
        own = self.frames[index].get("draw_pose_params")
        return validate_draw_params(own) if own is not None else self.draw_params

    def select(self, indices: Iterable[int]) -> "PoseSequence":
        idx = [int(i) for i in indices]
        n = len(self.frames)
        for i in idx:
            if not -n <= i < n:
                raise InputError(f"pose frame index {i} out of range for a sequence of {n} frames")
        return PoseSequence([self.frames[i] for i in idx], self.draw_params, self.fps, self.ref_w)

    def copy(self) -> "PoseSequence":
        return PoseSequence([copy_frame(f) for f in self.frames], self.draw_params, self.fps, self.ref_w)

    @classmethod
    def from_frames(cls, frames: Iterable[dict], draw_params: Sequence[int] | None = None,
                    fps: float = 24.0, ref_w: int = DEFAULT_REF_W) -> "PoseSequence":
        """Validate frames (:func:`normalize_frame`) and build a sequence.

        ``draw_params`` default: the frames' own parameters when they all agree (they then stay
        only on the sequence), else full canvas with per-frame parameters kept on the frames.
        """
        frames = [normalize_frame(f) for f in frames]
        own = [tuple(f["draw_pose_params"]) for f in frames if "draw_pose_params" in f]
        if draw_params is None:
            if own and len(own) == len(frames) and len(set(own)) == 1:
                draw_params = own[0]
            else:
                draw_params = FULL_CANVAS
        draw_params = validate_draw_params(draw_params)
        for f in frames:
            if tuple(f.get("draw_pose_params", draw_params)) == tuple(draw_params):
                f.pop("draw_pose_params", None)
        return cls(frames, draw_params, fps, ref_w)

    def to_arrays(self, placer=None, missing_below: float = 0.01):
        """Dense one-person arrays (:class:`~echomimic_core.pose.arrays.PoseArrays`); see
        :meth:`PoseArrays.from_frames` for ``placer`` and ``missing_below``."""
        from .arrays import PoseArrays

        return PoseArrays.from_frames(self.frames, placer, missing_below)

    @classmethod
    def from_arrays(cls, arrays, draw_params: Sequence[int] | None = None, fps: float = 24.0,
                    ref_w: int = DEFAULT_REF_W) -> "PoseSequence":
        """A sequence from :class:`~echomimic_core.pose.arrays.PoseArrays` (or a dict of its arrays)."""
        from .arrays import PoseArrays

        if not isinstance(arrays, PoseArrays):
            arrays = PoseArrays.from_dict(arrays)
        return cls.from_frames(arrays.frames(), draw_params=draw_params, fps=fps, ref_w=ref_w)
