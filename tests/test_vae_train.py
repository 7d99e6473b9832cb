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


@pytest.mark.slow
def test_training_reduces_reconstruction_loss(data):
    torch.set_num_threads(1)
    frames, masks = tv.load_frames(data)
    cfg = tv.vae_config(TINY, sample_size=32)
    vae, hist = tv.train_vae(frames, masks, config=cfg, steps=40, batch=8, lr=3e-3, seed=0, log_every=10, log=None,
                             color_aug=False)
    assert [h["step"] for h in hist] == [10, 20, 30, 40]
    assert hist[-1]["l1"] < 0.7 * hist[0]["l1"], hist
    assert all(np.isfinite(h["loss"]) for h in hist)


@pytest.mark.slow
def test_training_is_deterministic(data):
    torch.set_num_threads(1)
    frames, masks = tv.load_frames(data, max_frames=8)
    cfg = tv.vae_config(TINY, sample_size=32)
    _, h1 = tv.train_vae(frames, masks, config=cfg, steps=3, batch=4, seed=5, log_every=1, log=None)
    _, h2 = tv.train_vae(frames, masks, config=cfg, steps=3, batch=4, seed=5, log_every=1, log=None)
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]


@pytest.mark.slow
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
    # default: the normalisation is folded into the weights, the config keeps the official constant
    assert vae.config.scaling_factor == log["scaling_factor"] == 0.18215
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
    assert z.shape == (1, 4, 4, 4)  # scale factor 8
    # 0.18215 * latents of the training frames: per-channel mean 0, std 1 (by construction)
    frames, _ = tv.load_frames(data)
    with torch.no_grad():
        z = vae.encode(tv._to_tensor(frames)).latent_dist.mean.double() * 0.18215
    np.testing.assert_allclose(z.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-3)
    np.testing.assert_allclose(z.std(dim=(0, 2, 3)).numpy(), 1.0, rtol=1e-3)
    assert log["eval"]["train_stats_before_fold"]["frames"] == len(frames)
    assert len(log["eval"]["scaled_latent_channel_std"]) == 4  # the held-out frames' figure, for the report


@pytest.mark.slow
def test_cli_no_fold_writes_measured_scaling_factor(data, tmp_path):
    from diffusers import AutoencoderKL

    out = tmp_path / "raw"
    tv.main([str(data), "--out", str(out), "--blocks", ",".join(map(str, TINY)), "--steps", "2", "--batch", "2",
             "--no-fold"])
    log = json.loads((out / "vae_train_log.json").read_text())
    vae = AutoencoderKL.from_pretrained(str(out))
    assert vae.config.scaling_factor == pytest.approx(1.0 / log["eval"]["train_stats_before_fold"]["latent_std"], rel=1e-4)
    frames, _ = tv.load_frames(data)
    with torch.no_grad():
        z = vae.encode(tv._to_tensor(frames)).latent_dist.mean * vae.config.scaling_factor
    assert float(z.std()) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.slow
def test_zero_steps_only_refolds(data, tmp_path):
    """--init X --steps 0: no training, the latent normalisation is re-measured and folded again."""
    from diffusers import AutoencoderKL

    first, second = tmp_path / "a", tmp_path / "b"
    tv.main([str(data), "--out", str(first), "--blocks", ",".join(map(str, TINY)), "--steps", "2", "--batch", "2"])
    tv.main([str(data / "heldout"), "--eval-data", str(data / "heldout"), "--init", str(first), "--out", str(second),
             "--steps", "0"])
    assert json.loads((second / "vae_train_log.json").read_text())["steps_done"] == 0
    a, b = AutoencoderKL.from_pretrained(str(first)), AutoencoderKL.from_pretrained(str(second))
    frames, _ = tv.load_frames(data / "heldout")
    x = tv._to_tensor(frames)
    with torch.no_grad():
        z = b.encode(x).latent_dist.mean.double() * 0.18215
        torch.testing.assert_close(b.decode(b.encode(x).latent_dist.mean).sample,
                                   a.decode(a.encode(x).latent_dist.mean).sample, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(z.std(dim=(0, 2, 3)).numpy(), 1.0, rtol=1e-3)


def test_folding_keeps_the_decoded_images():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**tv.vae_config(TINY, sample_size=32)).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        post = vae.encode(x).latent_dist
        z0, s0 = post.mean.clone(), post.std.clone()
        y0 = vae.decode(z0).sample
    mean, std = [0.3, -0.2, 0.1, 0.05], [2.0, 0.5, 1.5, 3.0]
    tv.fold_latent_normalisation(vae, mean, std)
    with torch.no_grad():
        post = vae.encode(x).latent_dist
        y1 = vae.decode(post.mean).sample
    k = 1.0 / (torch.tensor(std) * 0.18215)
    m = torch.tensor(mean)
    torch.testing.assert_close(post.mean, (z0 - m.view(1, -1, 1, 1)) * k.view(1, -1, 1, 1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(post.std, s0 * k.view(1, -1, 1, 1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(y1, y0, rtol=1e-4, atol=1e-5)


def test_fp16_storage(data, tmp_path):
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    out = tmp_path / "vae16"
    tv.main([str(data), "--out", str(out), "--blocks", ",".join(map(str, TINY)), "--steps", "1", "--batch", "2",
             "--fp16"])
    sd = load_file(str(out / "diffusion_pytorch_model.safetensors"))
    assert all(v.dtype == torch.float16 for v in sd.values())
    AutoencoderKL.from_pretrained(str(out))


@pytest.mark.slow
def test_saved_folder_replaces_sd_vae_in_the_official_layout(data, tmp_path):
    """echomimic_core's loader takes the trained folder in place of sd-vae-ft-mse/ (fixture model)."""
    from support.paths import fixtures_dir

    weights = fixtures_dir() / "weights"
    if not (weights / "denoising_unet.pth").is_file():
        pytest.skip("fixture weights not available")
    checkpoints = pytest.importorskip("echomimic_core.checkpoints")
    out = tmp_path / "sd-vae-ft-mse"
    tv.main([str(data), "--out", str(out), "--steps", "1", "--batch", "2"])  # default (16,16,32,32) config
    models = checkpoints.load_models(weights, vae_path=out)
    assert list(models.vae.config.block_out_channels) == list(tv.DEFAULT_BLOCKS)
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        z = models.vae.encode(x).latent_dist.mean
    assert z.shape == (1, 4, 8, 8)
