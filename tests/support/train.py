"""Helpers of the trainer tests: a phase config shrunk to the fixture model and a one-process run."""

from __future__ import annotations

from train.phases import load_config


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
