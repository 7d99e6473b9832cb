"""Shared test helpers: where the golden fixtures and the shared media live."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ECHOMIMIC_SHARED_DIR", REPO.parent / "shared"))


def fixtures_dir() -> Path:
    """The fixture folder; another set in the same format is checked by setting ECHOMIMIC_FIXTURES_DIR."""
    return Path(os.environ.get("ECHOMIMIC_FIXTURES_DIR", SHARED / "fixtures")).resolve()


@pytest.fixture(scope="session")
def fixtures() -> Path:
    path = fixtures_dir()
    if not (path / "config.json").is_file():
        pytest.fail(f"golden fixtures not found at {path}: set ECHOMIMIC_FIXTURES_DIR")
    return path


@pytest.fixture(scope="session")
def fixture_config(fixtures: Path) -> dict:
    return json.loads((fixtures / "config.json").read_text())


@pytest.fixture(scope="session")
def media() -> Path:
    path = SHARED / "media"
    if not path.is_dir():
        pytest.fail(f"shared media not found at {path}: set ECHOMIMIC_SHARED_DIR")
    return path
