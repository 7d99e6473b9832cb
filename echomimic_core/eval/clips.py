"""Clips to evaluate: reading (PyAV), pairing predictions with references by name, size checks.

A *clip* is either a video file (anything FFmpeg reads; its audio track, if any, is the clip's speech)
or a folder of frames: the trainer's dataset clip layout (``frames/000000.png`` ... plus an optional
``audio.wav``, train/README.md) or a plain folder of images sorted by name. ``--pred`` / ``--ref`` name
one clip each, or a folder of clips; folders are paired by clip name (file stem / folder name), and a
name present on one side only is reported, not silently dropped.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
IMAGE_EXTS = (".png", ".jpg", ".jpeg")
AUDIO_NAMES = ("audio.wav",)


def _frame_files(folder: Path) -> list[Path]:
    sub = folder / "frames"
    root = sub if sub.is_dir() else folder
    return sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def is_clip(path: Path) -> bool:
    """A video file, or a folder holding frames (directly or in ``frames/``)."""
    if path.is_file():
        return path.suffix.lower() in VIDEO_EXTS
    return path.is_dir() and bool(_frame_files(path))


@dataclass
class Clip:
    """One clip, decoded lazily: ``frames()`` -> uint8 ``[n, H, W, 3]`` RGB (cached), ``fps``, ``audio``.

    ``audio`` is a path the audio decoder reads (the video file itself, or ``audio.wav`` beside the
    frames), or None.
    """

    name: str
    path: Path
    fps: float = 24.0
    audio: Path | None = None
    _frames: np.ndarray | None = field(default=None, repr=False)
    _in_memory: bool = field(default=False, repr=False)
    _cap: float = field(default=0.0, repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike, name: str | None = None, fps: float = 24.0) -> "Clip":
        p = Path(path)
        if not p.exists():
            raise InputError(f"clip not found: {p}")
        if not is_clip(p):
            raise InputError(f"{p} is neither a video file ({', '.join(VIDEO_EXTS)}) nor a folder of frames")
        if p.is_file():
            return cls(name or p.stem, p, fps=fps, audio=p if _has_audio(p) else None)
        audio = next((p / a for a in AUDIO_NAMES if (p / a).is_file()), None)
        meta = p / "meta.json"
        if meta.is_file():  # trainer dataset clip: its own fps
            import json

            fps = float(json.loads(meta.read_text()).get("fps", fps))
        return cls(name or p.name, p, fps=fps, audio=audio)

    @classmethod
    def from_array(cls, name: str, frames, fps: float = 24.0, audio: Path | None = None) -> "Clip":
        """A clip already in memory (the trainer's validation step): frames in any form
        :func:`echomimic_core.video.frames_to_uint8` accepts."""
        from ..video import frames_to_uint8

        return cls(name, Path(name), fps=float(fps), audio=audio, _frames=frames_to_uint8(frames), _in_memory=True)

    def frames(self, max_frames: int | None = None) -> np.ndarray:
        """All frames (or the first ``max_frames``), decoded once and kept until :meth:`release`."""
        want = max_frames or math.inf
        if not self._in_memory and (self._frames is None or want > self._cap):
            if self.path.is_file():
                self._frames = _read_video(self.path, max_frames)
                self.fps = _video_fps(self.path) or self.fps
            else:
                self._frames = _read_folder(self.path, max_frames)
            self._cap = want
        return self._frames[:max_frames] if max_frames else self._frames

    def release(self) -> None:
        """Drop the decoded frames of a clip read from disk (a long clip is GBs at 768x768)."""
        if not self._in_memory:
            self._frames = None

    def audio_16k(self) -> np.ndarray:
        """16 kHz mono float32 (int16/32768), as the official audio path; InputError when there is none."""
        if self.audio is None:
            raise InputError(f"clip {self.name!r} has no audio (Sync-C/Sync-D need the speech): mux it into "
                             "the video or put audio.wav beside the frames")
        from ..audio.decode import load_waveform

        return load_waveform(str(self.audio))


def _has_audio(path: Path) -> bool:
    import av

    try:
        with av.open(str(path)) as c:
            return bool(c.streams.audio)
    except Exception:  # noqa: BLE001 - unreadable files are reported when decoded
        return False


def _video_fps(path: Path) -> float | None:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate
        return float(rate) if rate else None


def _read_video(path: Path, max_frames: int | None = None) -> np.ndarray:
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise InputError(f"{path} has no video stream")
            frames = []
            for f in c.decode(c.streams.video[0]):
                frames.append(f.to_ndarray(format="rgb24"))
                if max_frames and len(frames) >= max_frames:
                    break
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyAV raises many error classes
        raise InputError(f"cannot read video {path}: {exc}") from None
    if not frames:
        raise InputError(f"{path} has no decodable frames")
    return np.stack(frames)


def _read_folder(path: Path, max_frames: int | None = None) -> np.ndarray:
    import cv2

    frames = []
    for f in _frame_files(path)[:max_frames]:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"cannot read image {f}")
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if not frames:
        raise InputError(f"{path} holds no frames ({', '.join(IMAGE_EXTS)})")
    if len({f.shape for f in frames}) != 1:
        raise InputError(f"the frames in {path} do not all have the same size")
    return np.stack(frames)


def list_clips(path: str | os.PathLike) -> dict[str, Path]:
    """``{name: path}`` of the clips in a folder (or the one clip ``path`` is)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"not found: {p}")
    if is_clip(p):  # a video file or one folder of frames
        return {p.stem if p.is_file() else p.name: p}
    root = p / "clips" if (p / "clips").is_dir() else p  # a trainer dataset folder
    out: dict[str, Path] = {}
    for c in sorted(root.iterdir()):
        if c.name.startswith(".") or not is_clip(c):
            continue
        name = c.stem if c.is_file() else c.name
        if name in out:
            raise InputError(f"two clips named {name!r} in {root}: {out[name].name} and {c.name}")
        out[name] = c
    if not out:
        raise InputError(f"no clips in {p} (videos {', '.join(VIDEO_EXTS)} or folders of frames)")
    return out


def pair_clips(pred: str | os.PathLike, ref: str | os.PathLike, strict: bool = True) -> list[tuple[Clip, Clip]]:
    """Pairs ``(pred, ref)`` by clip name. Two single clips pair whatever their names.

    ``strict``: a name present on one side only raises InputError listing them; otherwise such names
    are skipped (the caller reports them).
    """
    P, R = list_clips(pred), list_clips(ref)
    if is_clip(Path(pred)) and is_clip(Path(ref)):
        (pn, pp), (_, rp) = next(iter(P.items())), next(iter(R.items()))
        return [(Clip.open(pp, pn), Clip.open(rp, pn))]
    only_p, only_r = sorted(set(P) - set(R)), sorted(set(R) - set(P))
    if strict and (only_p or only_r):
        raise InputError("prediction and reference clips do not pair by name: "
                         f"only in --pred: {only_p[:5]}{' ...' if len(only_p) > 5 else ''}; "
                         f"only in --ref: {only_r[:5]}{' ...' if len(only_r) > 5 else ''} "
                         "(rename them, or pass --allow-unpaired to score the common ones)")
    names = [n for n in P if n in R]
    if not names:
        raise InputError(f"no clip name is common to {pred} and {ref}")
    return [(Clip.open(P[n], n), Clip.open(R[n], n)) for n in names]


def check_pair(pred: np.ndarray, ref: np.ndarray, name: str, trim: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Frame-paired metrics need equal sizes; frame counts may differ by trimming to the shorter clip.

    Generated clips are often a few frames shorter than the source (context-window rounding), so
    ``trim=True`` compares the first ``min(n_pred, n_ref)`` frames; ``trim=False`` raises instead.
    """
    if pred.shape[1:3] != ref.shape[1:3]:
        raise InputError(f"clip {name!r}: prediction is {pred.shape[2]}x{pred.shape[1]} but the reference is "
                         f"{ref.shape[2]}x{ref.shape[1]}; generate at the reference size (or pass --resize)")
    if len(pred) != len(ref):
        if not trim:
            raise InputError(f"clip {name!r}: prediction has {len(pred)} frames, the reference {len(ref)}")
        n = min(len(pred), len(ref))
        pred, ref = pred[:n], ref[:n]
    return pred, ref


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 ``[n, H, W, 3]`` resized (area filter when shrinking, bilinear when growing)."""
    import cv2

    if frames.shape[1:3] == (height, width):
        return frames
    interp = cv2.INTER_AREA if height < frames.shape[1] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


def iter_windows(n: int, length: int, stride: int | None = None) -> Iterator[slice]:
    """Non-overlapping (default) windows of ``length`` frames in ``n``; a tail shorter than ``length`` is dropped."""
    stride = stride or length
    for s in range(0, n - length + 1, stride):
        yield slice(s, s + length)
