"""Reading and writing pose sequences.

Three on-disk forms, all holding the same keypoints:

* **official folder**: ``<dir>/0.npy, 1.npy, ...``, one pickled frame dict per file (the layout of
  ``assets/halfbody_demo/pose/<name>``). Read with the restricted unpickler of
  :mod:`.safe_load` (never ``allow_pickle=True``); written with ``np.save`` so the official code
  reads our exports.
* **our single file, ``.npz``** (version 1): no pickle at all. Arrays per field concatenated over
  frames plus per-frame counts, and a JSON ``meta`` string::

      meta           JSON {"format": "echomimic_v2.pose_sequence", "version": 1, "num_frames": N,
                           "draw_pose_params": [6 ints, 768 base], "canvas_base": 768, "ref_w": 800,
                           "fps": 24.0, "nums": [...], "frame_draw_params": {"<k>": [6 ints], ...}}
      n_bodies [N] int   body_candidate [sum*18, 2]  body_subset [sum, 18]  body_score [sum, 18]
      n_hands  [N] int   hands [sum, 21, 2]          hands_score [sum, 21]
      n_faces  [N] int   faces [sum, 68, 2]          faces_score [sum, 68]

  Body ``subset`` entries keep the official meaning (row index into that frame's candidate, -1 if
  not visible).
* **our single file, ``.json``** (version 1): the same ``meta`` keys plus ``"frames"``, a list of
  frame dicts in the official layout with nested lists of floats (exact float64 round trip).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from .formats import BASE_SIZE, N_BODY, N_FACE, N_HAND, PoseSequence, normalize_frame, validate_draw_params
from .safe_load import safe_load_npy

FORMAT_NAME = "echomimic_v2.pose_sequence"
FORMAT_VERSION = 1
_INT_STEM = re.compile(r"^-?\d+$")


# ------------------------------------------------------------------ official folder
def list_official_frames(folder: str | Path) -> list[Path]:
    """The ``k.npy`` files of an official pose folder, in frame order (by the integer k)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"pose folder {folder} does not exist")
    files = [p for p in folder.iterdir() if p.suffix == ".npy" and p.is_file()]
    bad = [p.name for p in files if not _INT_STEM.match(p.stem)]
    if bad:
        raise InputError(f"pose folder {folder} has .npy files not named <frame>.npy: {bad[:5]}")
    if not files:
        raise InputError(f"pose folder {folder} has no <frame>.npy files")
    return sorted(files, key=lambda p: int(p.stem))


def load_official_folder(folder: str | Path, fps: float = 24.0) -> PoseSequence:
    """Read an official per-frame ``.npy`` folder safely into a :class:`PoseSequence`."""
    frames = []
    for path in list_official_frames(folder):
        obj = safe_load_npy(path)
        if not isinstance(obj, dict):
            raise InputError(f"{path} does not hold a pose dict (got {type(obj).__name__})")
        try:
            frames.append(normalize_frame(obj))
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
    return PoseSequence.from_frames(frames, fps=fps)


def save_official_folder(seq: PoseSequence, folder: str | Path) -> Path:
    """Write ``seq`` as ``folder/0.npy ... (n-1).npy`` in the official layout (``num`` = k,
    ``draw_pose_params`` as a list of 6 ints). Existing ``k.npy`` files with k >= n are removed so
    the folder holds exactly this sequence."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(seq.frames):
        d = normalize_frame(frame)
        d["num"] = k
        d["draw_pose_params"] = [int(v) for v in seq.frame_draw_params(k)]
        out = {"bodies": d["bodies"], "hands": d["hands"], "hands_score": d["hands_score"], "faces": d["faces"],
               "faces_score": d["faces_score"], "num": d["num"], "draw_pose_params": d["draw_pose_params"]}
        np.save(folder / f"{k}.npy", np.array(out, dtype=object), allow_pickle=True)
    for p in folder.glob("*.npy"):
        if _INT_STEM.match(p.stem) and int(p.stem) >= len(seq.frames):
            p.unlink()
    return folder


# ------------------------------------------------------------------ our format
def _meta(seq: PoseSequence) -> dict:
    nums = [int(f.get("num", k)) for k, f in enumerate(seq.frames)]
    own = {str(k): [int(v) for v in f["draw_pose_params"]] for k, f in enumerate(seq.frames)
           if f.get("draw_pose_params") is not None and tuple(f["draw_pose_params"]) != tuple(seq.draw_params)}
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "num_frames": len(seq.frames),
            "draw_pose_params": [int(v) for v in seq.draw_params], "canvas_base": BASE_SIZE,
            "ref_w": int(seq.ref_w), "fps": float(seq.fps), "nums": nums, "frame_draw_params": own}


def _check_meta(meta: dict, path: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise InputError(f"{path} is not an EchoMimicV2 pose sequence file (format tag missing)")
    version = meta.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise InputError(f"{path} has pose file version {version!r}; this library reads versions 1..{FORMAT_VERSION}")
    if int(meta.get("canvas_base", BASE_SIZE)) != BASE_SIZE:
        raise InputError(f"{path}: canvas_base {meta.get('canvas_base')} is not supported (expected {BASE_SIZE})")


def _apply_meta(frames: list[dict], meta: dict) -> PoseSequence:
    try:
        return _apply_meta_values(frames, meta)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"the pose file's metadata is damaged ({type(exc).__name__}: {exc}); re-save or "
                         "re-extract the poses") from None


def _apply_meta_values(frames: list[dict], meta: dict) -> PoseSequence:
    fps = float(meta.get("fps", 24.0))
    if not (fps > 0 and np.isfinite(fps)):
        raise InputError(f"the pose file's fps must be a positive number, got {meta.get('fps')!r}")
    nums = meta.get("nums") or []
    for k, f in enumerate(frames):
        if k < len(nums):
            f["num"] = int(nums[k])
    for key, params in (meta.get("frame_draw_params") or {}).items():
        frames[int(key)]["draw_pose_params"] = list(validate_draw_params(params))
    return PoseSequence.from_frames(frames, draw_params=meta.get("draw_pose_params"),
                                    fps=fps, ref_w=meta.get("ref_w", 800))


def _save_npz(seq: PoseSequence, path: Path) -> None:
    frames = [normalize_frame(f) for f in seq.frames]

    def cat(arrs, tail):
        return np.concatenate(arrs, 0) if arrs else np.zeros((0,) + tail)

    np.savez_compressed(
        path,
        meta=np.array(json.dumps(_meta(seq))),
        n_bodies=np.array([f["bodies"]["subset"].shape[0] for f in frames], dtype=np.int64),
        body_candidate=cat([f["bodies"]["candidate"] for f in frames], (2,)),
        body_subset=cat([f["bodies"]["subset"] for f in frames], (N_BODY,)),
        body_score=cat([f["bodies"]["score"] for f in frames], (N_BODY,)),
        n_hands=np.array([f["hands"].shape[0] for f in frames], dtype=np.int64),
        hands=cat([f["hands"] for f in frames], (N_HAND, 2)),
        hands_score=cat([f["hands_score"] for f in frames], (N_HAND,)),
        n_faces=np.array([f["faces"].shape[0] for f in frames], dtype=np.int64),
        faces=cat([f["faces"] for f in frames], (N_FACE, 2)),
        faces_score=cat([f["faces_score"] for f in frames], (N_FACE,)),
    )


def _load_npz(path: Path) -> PoseSequence:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:
        raise InputError(f"cannot read pose file {path}: {exc}") from None
    try:
        meta = json.loads(str(data["meta"]))
    except (KeyError, ValueError):
        raise InputError(f"{path} is not an EchoMimicV2 pose sequence file (no meta)") from None
    _check_meta(meta, path)
    try:
        nb, nh, nf = (data[k].astype(np.int64) for k in ("n_bodies", "n_hands", "n_faces"))
        n = int(meta["num_frames"])
        if not (len(nb) == len(nh) == len(nf) == n):
            raise ValueError("per-frame counts do not match num_frames")
        ob, oh, of = (np.concatenate([[0], np.cumsum(c)]) for c in (nb, nh, nf))
        frames = []
        for k in range(n):
            frames.append({
                "bodies": {"candidate": data["body_candidate"][ob[k] * N_BODY:ob[k + 1] * N_BODY],
                           "subset": data["body_subset"][ob[k]:ob[k + 1]],
                           "score": data["body_score"][ob[k]:ob[k + 1]]},
                "hands": data["hands"][oh[k]:oh[k + 1]], "hands_score": data["hands_score"][oh[k]:oh[k + 1]],
                "faces": data["faces"][of[k]:of[k + 1]], "faces_score": data["faces_score"][of[k]:of[k + 1]],
            })
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: malformed pose sequence file ({exc})") from None
    return _apply_meta([normalize_frame(f) for f in frames], meta)


def _tolist(frame: dict) -> dict:
    f = normalize_frame(frame)
    return {"bodies": {k: v.tolist() for k, v in f["bodies"].items()},
            "hands": f["hands"].tolist(), "hands_score": f["hands_score"].tolist(),
            "faces": f["faces"].tolist(), "faces_score": f["faces_score"].tolist()}


def _save_json(seq: PoseSequence, path: Path) -> None:
    doc = _meta(seq)
    doc["frames"] = [_tolist(f) for f in seq.frames]
    path.write_text(json.dumps(doc, separators=(",", ":")))


def _load_json(path: Path) -> PoseSequence:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read pose file {path}: {exc}") from None
    _check_meta(doc, path)
    frames = doc.get("frames")
    if not isinstance(frames, list) or len(frames) != int(doc.get("num_frames", -1)):
        raise InputError(f"{path}: 'frames' missing or not matching num_frames")
    return _apply_meta([normalize_frame(f) for f in frames], doc)


# ------------------------------------------------------------------ public entry points
def load_pose_sequence(path: str | Path, fps: float | None = None) -> PoseSequence:
    """Load a pose sequence from an official ``.npy`` folder, our ``.npz``/``.json`` file, or a
    single official ``.npy`` frame. ``fps`` overrides the stored frame rate (official folders carry
    none; 24 is assumed)."""
    path = Path(path)
    if path.is_dir():
        seq = load_official_folder(path)
    elif not path.is_file():
        raise InputError(f"pose sequence {path} does not exist")
    elif path.suffix == ".npz":
        seq = _load_npz(path)
    elif path.suffix == ".json":
        seq = _load_json(path)
    elif path.suffix == ".npy":
        obj = safe_load_npy(path)
        if not isinstance(obj, dict):
            raise InputError(f"{path} does not hold a pose dict")
        seq = PoseSequence.from_frames([obj])
    else:
        raise InputError(f"unknown pose file type {path.suffix!r} for {path}: use a folder of .npy, .npz or .json")
    if fps is not None:
        seq.fps = float(fps)
    return seq


def save_pose_sequence(seq: PoseSequence, path: str | Path) -> Path:
    """Save ``seq``: ``*.npz`` / ``*.json`` -> our single file; any other path -> an official folder."""
    path = Path(path)
    if path.suffix in (".npz", ".json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        (_save_npz if path.suffix == ".npz" else _save_json)(seq, path)
        return path
    if path.suffix:
        raise InputError(f"save_pose_sequence: use a .npz or .json file name or a folder, got {path}")
    return save_official_folder(seq, path)
