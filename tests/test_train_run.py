"""End-to-end trainer tests on CPU with the tiny fixture weights and a tiny generated dataset:
every phase runs, one batch overfits, kill+resume is bit-identical, 2-process DDP (gloo) matches
1 process, and the export loads in echomimic_core's loader (and generates a video)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from train import data as D
from train.phases import load_config

from support.train import fresh_accelerate as _fresh_accelerate, tiny_cfg, train_run as _train  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(fixtures) -> Path:
    return fixtures / "weights"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_ds")
    return D.write_tiny_dataset(root, num_clips=3, num_frames=6, size=64, tokens=20,
                                kinds=("halfbody", "headshot", "halfbody"))








PHASES = [
    ("stage1_1_initial_pose", {}),
    ("stage1_2_pose_iterative", {"init": {"from": "official"}}),
    ("stage1_3_lips", {"init": {"from": "official"}}),
    ("stage1_4a_head_headshot", {"init": {"from": "official"}}),
    ("stage1_4b_head_halfbody", {"init": {"from": "official"}}),
    ("stage1_5_hands_global", {"init": {"from": "official"}}),
    ("stage2_temporal", {"init": {"from": "official", "motion_module": None}, "data": {"clip_frames": 4},
                         "optim": {"per_device_batch": 1}}),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,over", PHASES, ids=[p[0] for p in PHASES])
def test_every_phase_runs_and_trains_only_its_parameters(name, over, tmp_path, weights, dataset):
    cfg = tiny_cfg(name, tmp_path / "run", weights, dataset, **over)
    from train.apdh import Trainer

    _fresh_accelerate()
    tr = Trainer(cfg)
    before = {k: v.detach().clone() for k, v in tr.net.state_dict().items()}
    result = tr.train()
    assert result["step"] == 2 and not result["interrupted"]
    assert torch.isfinite(torch.tensor(result["last"]["loss"]))
    after = tr.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trainable = {k for k, p in tr.net.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable, sorted(changed - trainable)[:5]
    ph = cfg["phase"]
    audio = {k for k in before if k.startswith("denoising_unet.") and ".transformer_blocks." in k
             and (".attn2." in k or ".norm2." in k)}
    resnet_norm2 = {k for k in before if k.startswith("denoising_unet.") and ".resnets." in k and ".norm2." in k}
    motion = {k for k in before if "motion_modules." in k}
    if ph["stage"] == 2:
        assert trainable <= motion and changed & motion
    else:
        assert not (trainable & motion)
        assert any(k.startswith("reference_unet.") for k in changed)
        assert any(k.startswith("pose_encoder.") for k in trainable)
        assert resnet_norm2 <= trainable  # ResNet norm2 is not part of the audio attention
        if ph["audio"] == "muted":
            assert not (trainable & audio)
        else:
            assert changed & audio  # the audio cross-attention learns from the partial/global phases on
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss,latent,pose,detail,lpips") and len(log) == 3


@pytest.mark.slow
def test_partial_attention_mask_reaches_the_audio_processor(tmp_path, weights, dataset):
    """Lips phase: the region mask is passed to the denoiser (zero mask = audio has no effect)."""
    cfg = tiny_cfg("stage1_3_lips", tmp_path / "run", weights, dataset)
    from train.apdh import Trainer

    _fresh_accelerate()
    tr = Trainer(cfg)
    net = tr.net
    g = torch.Generator().manual_seed(0)
    b, f = 1, 1
    args = dict(ref_latents=torch.randn(b, 4, 8, 8, generator=g), noisy_latents=torch.randn(b, 4, f, 8, 8, generator=g),
                timesteps=torch.tensor([500]), pose_images=torch.rand(b, 3, f, 64, 64, generator=g),
                pose_keep=torch.tensor([True]), reference_keep=torch.tensor([True]))
    a1, a2 = torch.randn(b, f, 20, 384, generator=g), torch.randn(b, f, 20, 384, generator=g)
    with torch.no_grad():
        zero = torch.zeros(b, f, 8, 8)
        m = torch.zeros(b, f, 8, 8)
        m[..., 2:5, 3:6] = 1
        o1 = net(audio=a1, audio_enabled=True, region_mask=zero, **args)
        o2 = net(audio=a2, audio_enabled=True, region_mask=zero, **args)
        muted = net(audio=a1, audio_enabled=False, **args)
        p1 = net(audio=a1, audio_enabled=True, region_mask=m, **args)
        p2 = net(audio=a2, audio_enabled=True, region_mask=m, **args)
    assert torch.allclose(o1, o2) and torch.allclose(o1, muted, atol=1e-6)
    assert not torch.allclose(p1, p2)


@pytest.mark.slow
def test_overfit_one_batch(tmp_path, weights, dataset):
    cfg = tiny_cfg("stage1_5_hands_global", tmp_path / "run", weights, dataset,
                   run={"max_steps": 10}, data={"fixed_batch": True}, optim={"lr": 1e-3},
                   training={"cfg_drop": 0.0})
    tr, result = _train(cfg)
    import csv

    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    print(f"overfit: loss {first:.4f} -> {last:.4f} ({100 * (1 - last / first):.1f}% drop)")
    assert last < 0.5 * first


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tmp_path, weights, dataset):
    over = dict(run={"max_steps": 4}, optim={"per_device_batch": 1, "grad_accum": 2},
                training={"ema": {"enabled": True, "decay": 0.9}})
    ref_cfg = tiny_cfg("stage1_2_pose_iterative", tmp_path / "a", weights, dataset, **over)
    tr_a, _ = _train(ref_cfg)
    want = {k: v.clone() for k, v in tr_a.net.state_dict().items()}
    want_ema = {k: v.clone() for k, v in tr_a.ema.shadow.items()}

    cfg = tiny_cfg("stage1_2_pose_iterative", tmp_path / "b", weights, dataset, **over)

    def kill_at_2(trainer, row):
        if row["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal: the handler sets the stop flag

    _, res = _train(cfg, step_callback=kill_at_2)
    assert res["interrupted"] and res["step"] == 2
    assert (tmp_path / "b" / "checkpoints" / "step_00000002" / "train_complete.json").is_file()
    tr_b, res_b = _train(cfg, resume="auto")
    assert res_b["step"] == 4
    got = tr_b.net.state_dict()
    diffs = [k for k in want if not torch.equal(want[k], got[k])]
    assert not diffs, f"{len(diffs)} tensors differ after resume, e.g. {diffs[:3]}"
    assert all(torch.equal(want_ema[k], tr_b.ema.shadow[k]) for k in want_ema)
    assert (tmp_path / "a" / "log.csv").read_text().splitlines()[1:] != []
    la = [r.split(",")[:6] for r in (tmp_path / "a" / "log.csv").read_text().splitlines()]
    lb = [r.split(",")[:6] for r in (tmp_path / "b" / "log.csv").read_text().splitlines()]
    assert la == lb  # same losses, same rows after the resume


def _write_cfg(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path, weights, dataset):
    # SGD: the update is linear in the gradient, so the comparison measures the gradient all-reduce, not
    # Adam's sign-like first step (which turns 1e-9 float noise in a near-zero gradient into ±lr)
    over = dict(run={"max_steps": 2}, training={"cfg_drop": 0.0})
    opt = {"optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0}
    one = tiny_cfg("stage1_3_lips", tmp_path / "one", weights, dataset, optim=dict(opt, per_device_batch=2), **over)
    from train.apdh import Trainer

    _fresh_accelerate()
    tr1 = Trainer(one)
    w0 = {k: v.clone() for k, v in tr1.net.state_dict().items()}
    tr1.train()
    w1 = {k: v.clone() for k, v in tr1.net.state_dict().items()}

    two = tiny_cfg("stage1_3_lips", tmp_path / "two", weights, dataset, optim=dict(opt, per_device_batch=1), **over)
    cfg_file = _write_cfg(tmp_path / "two.yaml", two)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "train" / "accelerate" / "ddp_cpu_2proc.yaml"), str(REPO / "train" / "apdh.py"),
           str(cfg_file), "--resume", "none"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from safetensors.torch import load_file

    w2 = load_file(str(tmp_path / "two" / "checkpoints" / "step_00000002" / "model.safetensors"))
    assert set(w2) == set(w1)
    err = max((w1[k].float() - w2[k].float()).abs().max().item() for k in w1)
    moved = max((w1[k].float() - w0[k].float()).abs().max().item() for k in w1)
    print(f"DDP 2x1 vs 1x2 after 2 SGD steps: max abs weight difference {err:.3e} (largest update {moved:.3e})")
    assert moved > 1e-4
    assert err < 1e-3 * moved


@pytest.mark.slow
def test_export_loads_in_core_loader_and_generates(tmp_path, weights, dataset):
    cfg = tiny_cfg("stage1_5_hands_global", tmp_path / "run", weights, dataset,
                   run={"max_steps": 1, "export_at_end": True})
    tr, _ = _train(cfg)
    from echomimic_core.checkpoints import load_models
    from train.export import export_run

    out = export_run(tmp_path / "run", tmp_path / "exported", safetensors=True)
    for name in ("reference_unet.pth", "denoising_unet.pth", "motion_module.pth", "pose_encoder.pth",
                 "reference_unet.safetensors", "inference_config.json"):
        assert (out / name).is_file(), name
    m = load_models(out)
    assert m.load_report.sources == {"denoising_unet": m.load_report.sources["denoising_unet"],
                                     "motion_module": m.load_report.sources["motion_module"]}
    assert not m.load_report.recomputed  # zero keys from the base weights, zero recomputed
    sd = tr.net.state_dict()
    for name, mod in (("reference_unet", m.reference_unet), ("denoising_unet", m.denoising_unet),
                      ("pose_encoder", m.pose_encoder)):
        msd = mod.state_dict()
        assert set(msd) == {k[len(name) + 1:] for k in sd if k.startswith(name + ".")}
        assert all(torch.equal(msd[k], sd[f"{name}.{k}"]) for k in msd)
    # the end-of-run export is the same folder layout
    assert (tmp_path / "run" / "export" / "denoising_unet.pth").is_file()
    from echomimic_core.pipeline import EchoMimicPipeline

    pipe = EchoMimicPipeline.from_models(m)
    g = torch.Generator().manual_seed(0)
    result = pipe.generate(torch.rand(64, 64, 3, generator=g), torch.randn(4, 20, 384, generator=g),
                           torch.rand(1, 3, 4, 64, 64, generator=g), width=64, height=64, steps=2,
                           guidance_scale=2.5, seed=0, context_frames=4, context_overlap=1)
    assert tuple(result.frames.shape) == (4, 3, 64, 64) and torch.isfinite(result.frames).all()
    from echomimic_core.video import VideoWriter, probe

    with VideoWriter(tmp_path / "trained.mp4", fps=24) as writer:
        writer.write(result.frames)
    assert (tmp_path / "trained.mp4").stat().st_size > 0 and probe(tmp_path / "trained.mp4")


@pytest.mark.slow
def test_scale_flags_bf16_checkpointing_crop_and_options(tmp_path, weights, dataset):
    """Mixed precision (bf16 autocast on CPU), gradient checkpointing, PhD on a latent crop, min-SNR,
    noise offset, sampled latents, audio drop and EMA all run together."""
    cfg = tiny_cfg("stage1_3_lips", tmp_path / "run", weights, dataset,
                   training={"mixed_precision": "bf16", "gradient_checkpointing": True, "min_snr_gamma": 5.0,
                             "noise_offset": 0.05, "latent": "sample", "audio_drop": 0.5,
                             "timestep_range": [300, 900], "ema": {"enabled": True, "decay": 0.99}},
                   losses={"phd": {"latent_crop": 4}})
    tr, result = _train(cfg)
    assert result["step"] == 2
    assert torch.isfinite(torch.tensor(result["last"]["loss"])) and result["last"]["detail"] > 0
    assert tr.acc.mixed_precision == "bf16"
    assert tr.net.denoising_unet.is_gradient_checkpointing


@pytest.mark.slow
def test_sd_init_copies_matching_tensors_and_zero_inits_new_parts(weights, dataset, tmp_path):
    from safetensors.torch import load_file

    from train.modeling import build_models

    cfg = tiny_cfg("stage1_1_initial_pose", tmp_path / "run", weights, dataset)
    m = build_models(cfg)
    sd = load_file(str(weights / "sd-image-variations-diffusers" / "unet" / "diffusion_pytorch_model.safetensors"))
    ref = m.reference_unet.state_dict()
    den = m.denoising_unet.state_dict()
    assert not any(".attn2." in k or (".transformer_blocks." in k and ".norm2." in k) or k.startswith("conv_out")
                   for k in ref)
    assert all(torch.equal(ref[k], sd[k].float()) for k in ref)  # every ReferenceNet tensor from SD-IV
    k = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert torch.equal(den[k], sd[k].float())
    k2 = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    assert den[k2].shape[1] == 384 and sd[k2].shape[1] != 384  # new audio projection
    assert m.pose_encoder.conv_out.weight.abs().sum() == 0
    proj = [v for n, v in den.items() if "motion_modules." in n and "proj_out" in n]
    assert proj and all(v.abs().sum() == 0 for v in proj)  # motion modules start as the identity
