"""Nothing resolves a local path as a hub id: a missing model folder is a clear error, and no socket is
ever opened on the way (connect is replaced by a recorder that refuses)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from echomimic_core.checkpoints import load_vae
from echomimic_core.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network access attempted in a test that forbids it")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_missing_vae_folder_is_not_a_hub_id(tmp_path, monkeypatch, no_network):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="sd-vae-ft-mse"):
        load_vae(Path("sd-vae-ft-mse"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        load_vae(Path("empty"))
    assert no_network == []


@pytest.mark.slow
def test_trainer_with_a_relative_base_folder_lacking_the_vae(tmp_path, monkeypatch, no_network, fixtures):
    from train.modeling import build_models

    base = tmp_path / "base"
    shutil.copytree(fixtures / "weights", base)
    for vae in base.rglob("sd-vae-ft-mse"):
        shutil.rmtree(vae)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="sd-vae-ft-mse"):
        build_models({"init": {"from": "sd", "base_folder": "base"}})
    assert no_network == []
