"""Shared fixtures (paths live in tests/support/paths.py, helpers and doubles in tests/support/)."""

from __future__ import annotations

import json
import os
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


def pytest_configure(config):
    # subprocesses (CLI runs, DDP workers, the headless ComfyUI server) inherit one thread too
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op torch thread for every test module (autouse; modules may still name it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``): the tiny networks of the tests run faster on
    one thread, and two threads per process oversubscribe a shared 2-core machine (measured ~10x slower
    steps under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
