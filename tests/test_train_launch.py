"""Launch configs exercised where gloo allows: multi-node DDP as two `accelerate launch` "machines" on
localhost (same weights as one process with the global batch); FSDP / DeepSpeed configs on a CPU-only
machine stop with one clear line (accelerate runs them only on GPUs); the 8-bit Adam option's message
without bitsandbytes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import yaml

from support.paths import REPO
from support.train import dataset, weights  # noqa: F401  (fixtures)
from support.train import fresh_accelerate as _fresh_accelerate, tiny_cfg
from train.phases import load_config

pytestmark = pytest.mark.usefixtures("one_thread")


OVER = dict(run={"max_steps": 2}, training={"cfg_drop": 0.0})
SGD = {"optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0}


def _launch(config: str, cfg_file, extra=(), env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **(env_extra or {}))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "train" / "accelerate" / config), *extra, str(REPO / "train" / "apdh.py"), str(cfg_file),
           "--resume", "none"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _one_process_weights(tmp_path, weights, dataset):
    from train.apdh import Trainer

    _fresh_accelerate()
    tr = Trainer(tiny_cfg("stage1_3_lips", tmp_path / "one", weights, dataset, optim=dict(SGD, per_device_batch=2),
                          **OVER))
    w0 = {k: v.clone() for k, v in tr.net.state_dict().items()}
    tr.train()
    return w0, {k: v.clone() for k, v in tr.net.state_dict().items()}


def _compare(w0, w1, ckpt):
    from safetensors.torch import load_file

    w2 = load_file(str(ckpt / "model.safetensors"))
    assert set(w2) == set(w1)
    err = max((w1[k].float() - w2[k].float()).abs().max().item() for k in w1)
    moved = max((w1[k].float() - w0[k].float()).abs().max().item() for k in w1)
    return err, moved


@pytest.mark.slow
def test_two_node_ddp_on_localhost_matches_one_process(tmp_path, weights, dataset):
    w0, w1 = _one_process_weights(tmp_path, weights, dataset)
    two = tiny_cfg("stage1_3_lips", tmp_path / "two", weights, dataset, optim=dict(SGD, per_device_batch=1), **OVER)
    cfg_file = tmp_path / "two.yaml"
    cfg_file.write_text(yaml.safe_dump(two))
    procs = [_launch("ddp_cpu_2node.yaml", cfg_file, ["--machine_rank", str(r)]) for r in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    err, moved = _compare(w0, w1, tmp_path / "two" / "checkpoints" / "step_00000002")
    print(f"2 nodes x 1 process vs 1 process x batch 2, 2 SGD steps: max abs diff {err:.3e} (update {moved:.3e})")
    assert moved > 1e-4 and err < 1e-3 * moved


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
@pytest.mark.parametrize("config", ["fsdp_8gpu.yaml", "deepspeed_zero2_8gpu.yaml"])
def test_fsdp_and_deepspeed_configs_on_cpu_stop_with_one_clear_line(config, monkeypatch, capsys, tmp_path):
    """accelerate runs FSDP / DeepSpeed only on GPUs (its FSDP plugin raises on a CPU-only machine):
    the trainer says so in one line, exit 2, before building anything."""
    from train import apdh

    env = {k: str(v).lower() for k, v in yaml.safe_load((REPO / "train" / "accelerate" / config).read_text()).items()
           if k == "distributed_type"}
    monkeypatch.setenv("ACCELERATE_USE_FSDP" if env["distributed_type"] == "fsdp" else "ACCELERATE_USE_DEEPSPEED",
                       "true")
    assert apdh.main(["stage1_1_initial_pose", "--set", f"run.output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs only on GPUs" in err and "ddp_cpu_2proc.yaml" in err
    with pytest.raises(RuntimeError, match="only on GPUs"):
        apdh._make_accelerator(load_config("stage1_1_initial_pose"))


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes installed")
def test_adamw8bit_without_bitsandbytes_names_the_fix():
    from train.optim import build_optimizer

    o = {"optimizer": "adamw8bit", "lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.0, "eps": 1e-8}
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        build_optimizer(o, [torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="optim.optimizer"):
        build_optimizer(dict(o, optimizer="lion"), [])


def test_launch_configs_parse_and_the_multinode_one_is_consistent():
    acc_dir = REPO / "train" / "accelerate"
    for f in acc_dir.glob("*.yaml"):
        c = yaml.safe_load(f.read_text())
        assert c["num_processes"] >= c["num_machines"] >= 1, f.name
    mn = yaml.safe_load((acc_dir / "ddp_2node_16gpu.yaml").read_text())
    assert mn["num_machines"] == 2 and mn["num_processes"] == 16 and mn["main_process_ip"]
    from train.phases import load_config

    with pytest.raises(ValueError, match="optim.optimizer"):
        load_config("stage1_1_initial_pose", ["optim.optimizer=lion"])
    assert load_config("stage1_1_initial_pose", ["optim.optimizer=adamw8bit"])["optim"]["optimizer"] == "adamw8bit"
