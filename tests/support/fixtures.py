"""Fixture-set helpers that take file names from the set's own json files (never the dev set's names),
so the suite runs on any fixture set in the same format (ECHOMIMIC_FIXTURES_DIR)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def pose_frame_files(fixtures: Path) -> list[Path]:
    """The official pose ``.npy`` frames of the set, in order (from ``pose_drawing/pose_drawing.json``)."""
    folder = fixtures / "pose_drawing"
    meta = json.loads((folder / "pose_drawing.json").read_text())
    return [folder / frame["npy"] for frame in meta["frames"]]


def official_pose_folder(fixtures: Path, dest: Path) -> Path:
    """``dest`` filled with the set's pose frames named ``0.npy, 1.npy, …`` (the official folder layout)."""
    dest.mkdir(parents=True, exist_ok=True)
    for k, src in enumerate(pose_frame_files(fixtures)):
        shutil.copy(src, dest / f"{k}.npy")
    return dest
