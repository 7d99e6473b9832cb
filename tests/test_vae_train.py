"""Tiny AutoencoderKL pretraining (train/vae.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train import synthetic as syn
from train import vae as tv

TINY = (8, 8, 16, 16)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vaedata") / "data"
    syn.generate_dataset(root, clips=3, frames=8, size=32, seed=2, heldout_frac=0.34, media_dir=None)
    return root


def test_load_frames_with_focus_masks(data):
    frames, masks = tv.load_frames(data)
    assert frames.shape == (16, 32, 32, 3) and frames.dtype == np.uint8
    assert masks.shape == (16, 32, 32)
    assert 0.02 < masks.mean() < 0.5  # lips + hand boxes, not the whole frame


def test_training_reduces_reconstruction_loss(data):
    torch.set_num_threads(1)
    frames, masks = tv.load_frames(data)
    cfg = tv.vae_config(TINY, sample_size=32)
    vae, hist = tv.train_vae(frames, masks, config=cfg, steps=40, batch=8, lr=3e-3, seed=0, log_every=10, log=None)
    assert [h["step"] for h in hist] == [10, 20, 30, 40]
    assert hist[-1]["l1"] < 0.7 * hist[0]["l1"], hist
    assert all(np.isfinite(h["loss"]) for h in hist)


def test_training_is_deterministic(data):
    torch.set_num_threads(1)
    frames, masks = tv.load_frames(data, max_frames=8)
    cfg = tv.vae_config(TINY, sample_size=32)
    _, h1 = tv.train_vae(frames, masks, config=cfg, steps=3, batch=4, seed=5, log_every=1, log=None)
    _, h2 = tv.train_vae(frames, masks, config=cfg, steps=3, batch=4, seed=5, log_every=1, log=None)
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]


def test_cli_saves_a_loadable_diffusers_folder(data, tmp_path):
    from diffusers import AutoencoderKL

    out = tmp_path / "sd-vae-ft-mse"
    rc = tv.main([str(data), "--out", str(out), "--blocks", ",".join(map(str, TINY)), "--steps", "4",
                  "--batch", "4", "--log-every", "2"])
    assert rc == 0
    assert (out / "config.json").is_file() and (out / "diffusion_pytorch_model.safetensors").is_file()
    log = json.loads((out / "vae_train_log.json").read_text())
    assert log["steps_done"] == 4 and log["eval_source"].endswith("heldout")
    vae = AutoencoderKL.from_pretrained(str(out))
    assert vae.config.latent_channels == 4 and list(vae.config.block_out_channels) == list(TINY)
    assert vae.config.scaling_factor == pytest.approx(log["scaling_factor"])
    assert vae.config.scaling_factor == pytest.approx(1.0 / log["eval"]["latent_std"], rel=1e-4)
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
    assert z.shape == (1, 4, 4, 4)  # scale factor 8
    # scaled latents of the eval frames have unit std by construction
    frames, _ = tv.load_frames(data / "heldout")
    with torch.no_grad():
        z = vae.encode(tv._to_tensor(frames)).latent_dist.mean * vae.config.scaling_factor
    assert float(z.std()) == pytest.approx(1.0, rel=1e-3)


def test_fp16_storage(data, tmp_path):
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    out = tmp_path / "vae16"
    tv.main([str(data), "--out", str(out), "--blocks", ",".join(map(str, TINY)), "--steps", "1", "--batch", "2",
             "--fp16"])
    sd = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    assert all(v.dtype == torch.float16 for v in sd.values())
    AutoencoderKL.from_pretrained(str(out))
