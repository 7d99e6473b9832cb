"""LoRA training with the APDH trainer on the tiny fixture model: only the adapters train, a few steps
on one batch lower its loss versus the base, the exported file (end of run and `export.py --lora`)
reproduces the trained peft network through echomimic_core.lora, and resume continues exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from train import data as D
from train.phases import deep_merge, load_config

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


@pytest.fixture(scope="module")
def weights(fixtures) -> Path:
    return fixtures / "weights"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return D.write_tiny_dataset(tmp_path_factory.mktemp("lora_ds"), num_clips=2, num_frames=6, size=64, tokens=20,
                                kinds=("halfbody", "halfbody"))


def lora_cfg(out, weights, dataset, **over):
    base = {"run": {"output_dir": str(out), "max_steps": 10, "checkpoint_every": 0, "progress_bar": False,
                    "log_every": 1, "export_at_end": True},
            "init": {"from": "official", "base_folder": str(weights), "weights_folder": str(weights)},
            "data": {"roots": [str(dataset)], "resolution": 64, "num_workers": 0, "audio_features": "cached",
                     "fixed_batch": True},
            "optim": {"per_device_batch": 2, "lr": 5e-3, "weight_decay": 0.0},
            "training": {"cfg_drop": 0.0},
            "losses": {"phd": {"enabled": False}},
            "lora": {"rank": 4, "alpha": 4, "networks": ["denoising_unet", "reference_unet"]}}
    return load_config("stage1_5_hands_global", deep_merge(base, over))


def _trainer(cfg):
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from train.apdh import Trainer

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    return Trainer(cfg)


def _lora_state(tr):
    return {k: v.detach().clone() for k, v in tr.net.state_dict().items() if ".lora_" in k}


def test_lora_training_lowers_the_loss_and_the_file_reproduces_the_trained_network(tmp_path, weights, dataset):
    from echomimic_core.checkpoints import load_models
    from echomimic_core.lora import apply_loras, load_lora
    from support.lora import predict
    from train.export import main as export_main

    tr = _trainer(lora_cfg(tmp_path / "run", weights, dataset))
    trainable = {k for k, p in tr.net.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in k for k in trainable)
    assert any(k.startswith("reference_unet.") for k in trainable)
    frozen = {k: v.detach().clone() for k, v in tr.net.state_dict().items() if ".lora_" not in k}
    batch = next(iter(tr._loader(0)))
    with torch.no_grad():
        loss_base = float(tr._micro_step(batch, 0)[0])  # lora_B starts at zero: the base model
    result = tr.train()
    with torch.no_grad():
        loss_lora = float(tr._micro_step(batch, 0)[0])
    assert result["step"] == 10
    assert loss_lora < 0.9 * loss_base, (loss_base, loss_lora)
    after = tr.net.state_dict()
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)  # the base weights never move

    path = tmp_path / "run" / "export" / "lora.safetensors"
    lora = load_lora(path)
    assert lora.metadata.rank == 4 and lora.metadata.training["step"] == 10
    assert {n for n, _ in lora.modules} == {"denoising_unet", "reference_unet"}
    # the trained peft network == the base + the file applied by the library (plain deltas)
    trained = predict(tr.models)
    base = load_models(weights)
    y0 = predict(base)
    with apply_loras(base, [path]):
        assert (predict(base) - trained).abs().max() <= 1e-5
    assert (trained - y0).abs().max() > 1e-4  # and the LoRA changes the output
    # export.py --lora from the checkpoint writes the same adapters
    assert export_main([str(tmp_path / "run"), str(tmp_path / "again.safetensors"), "--lora"]) == 0
    again = load_lora(tmp_path / "again.safetensors")
    assert again.metadata.base_model_hash == lora.metadata.base_model_hash
    assert all(torch.equal(again.modules[k][1], lora.modules[k][1]) for k in lora.modules)


def test_lora_resume_continues_exactly(tmp_path, weights, dataset):
    over = {"run": {"export_at_end": False}, "data": {"fixed_batch": False}}
    full = _trainer(lora_cfg(tmp_path / "full", weights, dataset, **deep_merge(over, {"run": {"max_steps": 4}})))
    full.train()
    first = _trainer(lora_cfg(tmp_path / "split", weights, dataset, **deep_merge(over, {"run": {"max_steps": 2}})))
    first.train()
    second = _trainer(lora_cfg(tmp_path / "split", weights, dataset, **deep_merge(over, {"run": {"max_steps": 4}})))
    assert second.resume("auto") and second.state.step == 2
    second.train()
    a, b = _lora_state(full), _lora_state(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
