"""Shared fixtures (paths live in tests/support/paths.py, helpers and doubles in tests/support/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.paths import REPO, SHARED, fixtures_dir  # noqa: F401


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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``):
    the tiny networks of the tests run faster on one thread, and two threads per process oversubscribe a
    shared 2-core machine (measured ~10x slower steps under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
