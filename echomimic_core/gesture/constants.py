"""Plain gesture constants (no torch): the CLI's argument parser reads them without loading the model code."""

from __future__ import annotations

from pathlib import Path

MODES = ("audio", "library", "still")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "gesture_model"
