"""Where the repository, the shared folder and the golden fixtures are (one place for every test)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("ECHOMIMIC_SHARED_DIR", REPO.parent / "shared"))


def fixtures_dir() -> Path:
    """The fixture folder; another set in the same format is checked by setting ECHOMIMIC_FIXTURES_DIR."""
    return Path(os.environ.get("ECHOMIMIC_FIXTURES_DIR", SHARED / "fixtures")).resolve()
