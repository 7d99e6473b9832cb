"""The embedded demo model (echomimic_core/assets/demo_model) and `python -m echomimic_core demo`:
the shipped files load with zero missing keys, the command writes an mp4 with video + audio of the right
length, the ComfyUI loader and Demo Inputs node reach the shipped files, and the trained model beats the
same networks at random init on a held-out synthetic clip (bench/demo_quality.py metrics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from support.paths import REPO

ASSETS = REPO / "echomimic_core" / "assets"
MODEL = ASSETS / "demo_model"
INPUTS = ASSETS / "demo"


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_weights_are_small_fp16_safetensors():
    files = [p for p in MODEL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30 * 2 ** 20
    assert not list(MODEL.glob("*.pth")), "only .safetensors copies are shipped"
    from safetensors.torch import load_file

    for name in ("reference_unet", "denoising_unet", "motion_module", "pose_encoder"):
        sd = load_file(str(MODEL / f"{name}.safetensors"))
        assert {v.dtype for k, v in sd.items() if not k.endswith("pos_encoder.pe")} == {torch.float16}, name
    assert (MODEL / "sd-image-variations-diffusers" / "unet" / "config.json").is_file()
    assert (MODEL / "audio_processor" / "tiny.pt").is_file()


@pytest.mark.slow
def test_assets_load_with_zero_missing_keys():
    from echomimic_core.audio import load_audio_encoder
    from echomimic_core.checkpoints import load_models
    from echomimic_core.pipeline import load_reference_image
    from echomimic_core.pose import load_pose_sequence

    models = load_models(MODEL, dtype=torch.float32, device="cpu")  # strict: raises on missing/unexpected keys
    report = models.load_report
    assert set(report.sources) <= {"denoising_unet", "motion_module"}, report.sources  # nothing from base weights
    assert report.sources.get("motion_module", 0) > 0
    assert all(k.endswith("pos_encoder.pe") for k in report.recomputed), report.recomputed
    # the real architecture, tiny: official 384-d audio cross-attention, motion modules, 4 latent channels
    assert models.denoising_unet.config.cross_attention_dim == 384
    assert models.vae.config.latent_channels == 4
    enc = load_audio_encoder(models.audio_encoder_path)
    assert enc.encoder.config.d_model == 384 and enc.num_states == 2
    seq = load_pose_sequence(INPUTS / "poses.npz")
    img = load_reference_image(INPUTS / "reference.png")
    source = json.loads((INPUTS / "source.json").read_text())
    assert len(seq) == source["num_frames"] and img.size == tuple(source["size"])
    assert source["heldout"] is True


def _streams(path):
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0]
        n = sum(1 for _ in c.decode(video=0))
        vdur = float(v.duration * v.time_base) if v.duration else n / float(v.average_rate)
        adur = float(a.duration * a.time_base) if a.duration else None
        return {"frames": n, "width": v.width, "height": v.height, "fps": float(v.average_rate),
                "video_s": vdur, "audio_s": adur, "audio_rate": a.rate}


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path):
    out = tmp_path / "demo.mp4"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "echomimic_core", "demo", "--out", str(out), "--steps", "2",
                          "--max-frames", "30", "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stdout and out.is_file()
    s = _streams(out)
    assert s["frames"] == 30 and s["fps"] == 24
    assert (s["width"], s["height"]) == (256, 256)  # 64x64 generation, display scale 4
    assert abs(s["video_s"] - 30 / 24) < 0.05
    assert s["audio_s"] is not None and abs(s["audio_s"] - 30 / 24) < 0.1


def test_demo_command_bad_arguments(tmp_path, capsys):
    from echomimic_core.__main__ import main

    assert main(["demo", "--out", str(tmp_path / "x.avi")]) == 2
    assert "--out must end in .mp4" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "x.mp4"), "--models", str(tmp_path / "nope")]) == 2
    assert "model folder not found" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_demo_defaults_switch_with_models():
    import argparse

    from echomimic_core.commands import demo

    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    emb = demo.generate_args(p.parse_args([]))
    assert (emb.settings.width, emb.settings.height, emb.display_scale) == (64, 64, 4)
    assert emb.models == str(demo.DEMO_MODEL)
    # the embedded run: the fast sampler preset over demo.json; --exact: demo.json's own 20 DDIM steps
    from echomimic_core.settings import FAST_OPTIONS, FAST_SAMPLER

    fast = {**FAST_SAMPLER, **FAST_OPTIONS}
    assert {k: getattr(emb.settings, k) for k in fast} == fast
    exact = demo.generate_args(p.parse_args(["--exact"])).settings
    assert (exact.scheduler, exact.steps, exact.context_schedule, exact.deep_cache_interval) == \
        ("ddim", demo.demo_settings()["steps"], "uniform", 1)
    mixed = demo.generate_args(p.parse_args(["--scheduler", "unipc", "--steps", "4"])).settings
    assert (mixed.scheduler, mixed.steps, mixed.context_schedule) == ("unipc", 4, "no_overlap")
    off = demo.generate_args(p.parse_args(["--models", "/w"]))
    # official weights: the normal preset (768x768; steps/cfg/seed None -> the pipeline's preset values)
    assert (off.settings.width, off.settings.height, off.display_scale) == (768, 768, 1)
    assert off.settings.steps is None and off.settings.guidance_scale is None and off.settings.seed is None


@pytest.mark.slow
def test_comfyui_loader_and_demo_inputs():
    from support.comfy import load_nodes

    nodes = load_nodes()
    loader = sys.modules[nodes.__name__ + ".loader"]
    assert loader.EMBEDDED_DEMO in loader.list_model_folders()
    assert os.path.samefile(loader.resolve_model_folder(loader.EMBEDDED_DEMO), MODEL)
    image, audio, poses, n = nodes.NODE_CLASS_MAPPINGS["EchoMimicV2DemoInputs"].execute().args
    assert image.shape == (1, 64, 64, 3) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert audio["sample_rate"] == 16000 and audio["waveform"].shape[:2] == (1, 1)
    assert n == len(poses) == 96


@pytest.mark.slow
def test_trained_model_beats_random_init(tmp_path):
    """One held-out synthetic clip (figure, voice and hand motion never seen in training), few steps."""
    sys.path.insert(0, str(REPO))
    from bench.demo_quality import ClipData, make_model_source, score_frames
    from train.synthetic import generate_dataset

    info = generate_dataset(tmp_path / "data", clips=8, frames=48, size=64, seed=123)
    clip = ClipData(tmp_path / "data" / "heldout" / "clips" / info["heldout"][0])
    scores = {}
    for name, rnd in (("trained", False), ("random", True)):
        run = make_model_source(MODEL, rnd, steps=8, seed=0, guidance_scale=2.0)
        scores[name] = score_frames(run(clip), clip)
    tr, rd = scores["trained"], scores["random"]
    assert tr["hand_err_frac"] < 0.10 and tr["hand_err_frac"] < 0.5 * rd["hand_err_frac"], scores  # target: 10 %
    assert tr["mouth_corr"] > 0.3 and tr["mouth_corr"] > rd["mouth_corr"] + 0.2, scores


@pytest.mark.slow
def test_demo_with_models_folder(tmp_path, fixtures):
    """--models DIR: the same shipped inputs through another official-layout folder (the tiny fixtures here)."""
    from echomimic_core.__main__ import main

    out = tmp_path / "official.mp4"
    assert main(["demo", "--models", str(fixtures / "weights"), "--out", str(out), "--width", "32", "--height", "32",
                 "--steps", "1", "--max-frames", "12", "--quiet"]) == 0
    s = _streams(out)
    assert s["frames"] == 12 and (s["width"], s["height"]) == (32, 32)  # display scale 1 with --models
