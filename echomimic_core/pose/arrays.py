"""Dense per-frame pose arrays (one person per frame): the typed twin of the official frame dicts.

The official frame dict (:mod:`.formats`) is ragged (any number of persons, OpenPose ``subset``
indirection). Training data, masks and models want fixed-size arrays instead; :class:`PoseArrays` is
that layout, and the only converter between the two (:meth:`PoseArrays.from_frames` /
:meth:`PoseArrays.frame`, also reached as ``PoseSequence.to_arrays`` / ``PoseSequence.from_arrays``)::

    bodies       float32 [F, 18, 2]      OpenPose-18 points of the first person, normalised to the canvas
    bodies_score float32 [F, 18]
    hands        float32 [F, 2, 21, 2]   left hand, right hand
    hands_score  float32 [F, 2, 21]
    faces        float32 [F, 68, 2]      iBUG-68
    faces_score  float32 [F, 68]

A missing point has coordinates ``-1`` and score ``0``. Saved as the trainer's ``keypoints.npz``
(:meth:`as_dict` / :meth:`from_dict`, array names as above).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, ClassVar, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

from ..errors import InputError
from .formats import N_BODY, N_FACE, N_HAND

__all__ = ["PoseArrays"]

Placer = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]

#: a body point whose score is at most this is left out of ``subset`` (the official DWPose rule)
SUBSET_SCORE = 0.3


@dataclass
class PoseArrays:
    """One person per frame as dense arrays (see the module docstring for shapes)."""

    bodies: np.ndarray
    bodies_score: np.ndarray
    hands: np.ndarray
    hands_score: np.ndarray
    faces: np.ndarray
    faces_score: np.ndarray

    SHAPES: ClassVar[Dict[str, Tuple[int, ...]]] = {
        "bodies": (N_BODY, 2), "bodies_score": (N_BODY,),
        "hands": (2, N_HAND, 2), "hands_score": (2, N_HAND),
        "faces": (N_FACE, 2), "faces_score": (N_FACE,),
    }

    def __post_init__(self) -> None:
        n = None
        for f in fields(self):
            value = np.asarray(getattr(self, f.name), dtype=np.float32)
            if value.shape[1:] != self.SHAPES[f.name] or (n is not None and value.shape[0] != n):
                raise InputError(f"pose arrays: {f.name} has shape {value.shape}, expected "
                                 f"[{n if n is not None else 'F'}, {', '.join(map(str, self.SHAPES[f.name]))}]")
            n = value.shape[0]
            setattr(self, f.name, value)

    def __len__(self) -> int:
        return int(self.bodies.shape[0])

    @classmethod
    def empty(cls, num_frames: int) -> "PoseArrays":
        """Every point missing (coordinates -1, scores 0)."""
        return cls(**{k: np.full((int(num_frames),) + s, 0.0 if k.endswith("score") else -1.0, dtype=np.float32)
                      for k, s in cls.SHAPES.items()})

    @classmethod
    def from_dict(cls, arrays: Mapping[str, np.ndarray]) -> "PoseArrays":
        missing = [k for k in cls.SHAPES if k not in arrays]
        if missing:
            raise InputError(f"pose arrays: missing {missing}")
        return cls(**{k: arrays[k] for k in cls.SHAPES})

    def as_dict(self) -> Dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.SHAPES}

    # -- official frame dicts ------------------------------------------------------------------------

    @classmethod
    def from_frames(cls, frames: Iterable[dict], placer: Optional[Placer] = None,
                    missing_below: float = 0.01) -> "PoseArrays":
        """Official frame dicts → arrays (first person, first face, the first two hands).

        ``placer(x, y) -> (x, y)`` maps the frames' normalised coordinates (e.g. from a crop box to the
        stored frame); points with x or y at most ``missing_below`` (detector misses) become -1 / score 0.
        """
        frames = list(frames)
        out = cls.empty(len(frames))

        def place(xy) -> np.ndarray:
            xy = np.asarray(xy, dtype=np.float64).copy()
            bad = (xy[..., 0] <= missing_below) | (xy[..., 1] <= missing_below)
            if placer is not None:
                xy[..., 0], xy[..., 1] = placer(xy[..., 0], xy[..., 1])
            xy[bad] = -1.0
            return xy

        for i, fr in enumerate(frames):
            b = fr["bodies"]
            cand, subset, score = np.asarray(b["candidate"]), np.asarray(b["subset"]), np.asarray(b["score"])
            if subset.shape[0] >= 1:
                for j in range(N_BODY):
                    idx = int(subset[0, j])
                    if idx >= 0:
                        out.bodies[i, j] = place(cand[idx])
                        out.bodies_score[i, j] = float(score[0, j])
            hands, hs = np.asarray(fr["hands"]), np.asarray(fr["hands_score"])
            for h in range(min(2, len(hands))):
                out.hands[i, h] = place(hands[h])
                out.hands_score[i, h] = np.where(out.hands[i, h, :, 0] < 0, 0, hs[h])
            faces, fs = np.asarray(fr["faces"]), np.asarray(fr["faces_score"])
            if len(faces):
                out.faces[i] = place(faces[0])
                out.faces_score[i] = np.where(out.faces[i, :, 0] < 0, 0, fs[0])
        return out

    def frame(self, i: int) -> dict:
        """Frame ``i`` as an official frame dict (one person; ``subset`` from the scores > 0.3)."""
        return frame_from_arrays(self.as_dict(), i)

    def frames(self) -> list:
        return [self.frame(i) for i in range(len(self))]


def frame_from_arrays(arrays: Mapping[str, np.ndarray], i: int) -> dict:
    """Frame ``i`` of (possibly memory-mapped) arrays in the :class:`PoseArrays` layout → official dict,
    without validating or copying the whole clip (the trainer calls it per sample)."""
    cand = np.array(arrays["bodies"][i], dtype=np.float64)
    score = np.array(arrays["bodies_score"][i], dtype=np.float64)
    subset = np.where(score > SUBSET_SCORE, np.arange(N_BODY, dtype=np.float64), -1.0)
    return {
        "bodies": {"candidate": cand, "subset": subset[None], "score": score[None]},
        "hands": np.array(arrays["hands"][i], dtype=np.float64),
        "hands_score": np.array(arrays["hands_score"][i], dtype=np.float64),
        "faces": np.array(arrays["faces"][i], dtype=np.float64)[None],
        "faces_score": np.array(arrays["faces_score"][i], dtype=np.float64)[None],
    }
