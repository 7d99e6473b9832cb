"""Skipping damaged training clips instead of stopping the run.

A corrupt frame, ``meta.json`` or ``keypoints.npz``, or a missing ``audio.wav``/frame in one clip of a
large dataset must not end a multi-day run. The dataset asks :class:`BadClips` what to do: the clip is
recorded (one JSON line per clip in the run folder's ``bad_clips.jsonl``, naming the file and the
error) and the sample is drawn again deterministically (the same sample number always lands on the
same readable sample, so resume and multi-process runs stay exact). Past
``data.max_bad_fraction`` of the clips the run stops with one line that points to the log.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path

from echomimic_core.errors import ConfigError

#: what a damaged clip raises while being read (PyAV's decode errors are OSError/ValueError subclasses)
BAD_CLIP_ERRORS = (OSError, ValueError, KeyError, EOFError, IndexError, zipfile.BadZipFile)


class TooManyBadClips(RuntimeError):
    """More than ``max_bad_fraction`` of the clips could not be read."""


class BadClips:
    """The clips one process found damaged, and where they are recorded."""

    def __init__(self, num_clips: int | None = None, max_fraction: float = 0.05,
                 log_path: str | os.PathLike | None = None):
        """``num_clips`` may be set later (after listing, which can itself find damaged clips); the
        fraction is checked once it is known."""
        if not 0.0 <= float(max_fraction) <= 1.0:
            raise ConfigError(f"data.max_bad_fraction is a fraction in [0, 1], got {max_fraction}")
        self.num_clips = num_clips
        self.max_fraction = float(max_fraction)
        self.log_path = Path(log_path) if log_path is not None else None
        self.reasons: dict[Path, str] = {}

    def record(self, clip_path: Path, error: BaseException) -> None:
        """Remember a damaged clip, log it once, and stop the run past the allowed fraction."""
        clip_path = Path(clip_path)
        if clip_path in self.reasons:
            return
        reason = f"{type(error).__name__}: {error}"
        if str(clip_path) not in str(error):
            reason = f"{clip_path}: {reason}"
        self.reasons[clip_path] = reason
        warnings.warn(f"skipping damaged training clip ({reason})", stacklevel=3)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a") as f:  # one short line per clip: appends from workers interleave whole
                f.write(json.dumps({"clip": str(clip_path), "error": reason}) + "\n")
        self.check()

    def check(self) -> None:
        """Raise :class:`TooManyBadClips` past the allowed fraction (no-op while the total is unknown)."""
        if self.num_clips is not None and len(self.reasons) > self.max_fraction * max(1, self.num_clips):
            where = f" (see {self.log_path})" if self.log_path is not None else ""
            raise TooManyBadClips(
                f"{len(self.reasons)} of {self.num_clips} training clips are damaged, more than "
                f"data.max_bad_fraction = {self.max_fraction:g}{where}; re-run train/preprocess.py on them "
                "or raise data.max_bad_fraction")
