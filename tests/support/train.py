"""Helpers of the trainer tests: a phase config shrunk to the fixture model, a one-process run, and the
fixture weights + a tiny dataset as fixtures (a test module imports them by name)."""

from __future__ import annotations

import pytest

from train.phases import load_config


@pytest.fixture(scope="module")
def weights(fixtures):
    """The fixture set's tiny model in the official layout."""
    return fixtures / "weights"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two 6-frame 64² clips with 20-token audio features, written once per test module."""
    from train import data as D

    return D.write_tiny_dataset(tmp_path_factory.mktemp("tiny_ds"), num_clips=2, num_frames=6, size=64, tokens=20)


def fresh_accelerate():
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def tiny_cfg(name, out, weights, dataset, **over):
    """A phase config shrunk to the fixture model: 64² images, batch 2, PhD with the test-only LPIPS."""
    base = {
        "run": {"output_dir": str(out), "max_steps": 2, "checkpoint_every": 0, "progress_bar": False,
                "log_every": 1, "export_at_end": False},
        "init": {"from": "sd", "base_folder": str(weights), "weights_folder": str(weights)},
        "data": {"roots": [str(dataset)], "resolution": 64, "num_workers": 0, "audio_features": "cached"},
        "optim": {"per_device_batch": 2, "lr": 1e-4},
        "losses": {"lpips": {"net": "random_init_for_tests"}},
    }
    from train.phases import deep_merge

    return load_config(name, deep_merge(base, over))


def train_run(cfg, resume=None, step_callback=None):
    from train.apdh import Trainer

    fresh_accelerate()
    tr = Trainer(cfg, step_callback=step_callback)
    if resume:
        tr.resume(resume)
    result = tr.train()
    return tr, result
