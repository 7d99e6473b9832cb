"""Parity of the networks with the official code on the golden fixtures (levels a and b).

Every size, name and value comes from the fixture folder (``ECHOMIMIC_FIXTURES_DIR``): the weights are
loaded through the real ``load_models`` on ``<fixtures>/weights``; inputs and expected outputs from
``pose_encoder/pose_encoder.safetensors`` and ``unet/unet.safetensors``.
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from echomimic_core.checkpoints import load_models

POSE_TOL = 1e-5       # fixtures README: pose encoder <= 1e-5
REFERENCE_TOL = 1e-5  # reference UNet output and bank <= 1e-5
DENOISER_TOL = 3e-4   # denoising UNet outputs <= 3e-4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(fixtures):
    return load_models(fixtures / "weights", variant="normal", dtype=torch.float32, device="cpu")


@pytest.fixture(scope="module")
def unet_level(fixtures):
    return load_file(str(fixtures / "unet" / "unet.safetensors"))


@pytest.fixture(scope="module")
def reference_out(models, unet_level):
    latents = unet_level["ref_latents"]
    with torch.no_grad():
        return models.reference_unet(latents, torch.zeros_like(unet_level["timestep"]))


def _maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return float((a.float() - b.float()).abs().max())


@pytest.mark.slow
def test_pose_encoder_parity(models, fixtures):
    data = load_file(str(fixtures / "pose_encoder" / "pose_encoder.safetensors"))
    pairs = [(k, k.replace("input_", "output_")) for k in sorted(data) if k.startswith("input_")]
    assert pairs, "no input_* tensors in pose_encoder.safetensors"
    with torch.no_grad():
        for inp, out in pairs:
            err = _maxabs(models.pose_encoder(data[inp]), data[out])
            print(f"pose encoder {inp}: max abs err {err:.3g}")
            assert err <= POSE_TOL, (inp, err)


@pytest.mark.slow
def test_reference_unet_output(reference_out, unet_level):
    err = _maxabs(reference_out.sample, unet_level["ref_unet_output"])
    print(f"reference unet output: max abs err {err:.3g}")
    assert err <= REFERENCE_TOL


def test_reference_bank_matches_official_order(models, reference_out, unet_level):
    names = sorted(k for k in unet_level if re.fullmatch(r"ref_bank_\d+", k))
    order = models.reference_unet.reference_block_order()
    assert len(names) == len(order) == len(reference_out.reference_bank)
    worst = 0.0
    for name, path in zip(names, order):
        err = _maxabs(reference_out.reference_bank[path], unet_level[name])
        worst = max(worst, err)
        assert err <= REFERENCE_TOL, (name, path, err)
    print(f"reference bank ({len(names)} blocks): max abs err {worst:.3g}")
    # official pairing = same module path
    assert all(k == v for k, v in models.reference_pairing.items())
    assert set(models.reference_pairing) == set(models.denoising_unet.transformer_blocks())


def test_denoiser_pred_cfg(models, reference_out, unet_level):
    """CFG batch as the pipeline builds it: [uncond, cond]; uncond has zero audio, zero pose, no reference."""
    x = unet_level["noisy_latents"]
    audio, pose = unet_level["audio_cond"], unet_level["pose_feat"]
    with torch.no_grad():
        pred = models.denoising_unet(
            torch.cat([x, x]), unet_level["timestep"], audio=torch.cat([torch.zeros_like(audio), audio]),
            pose_features=torch.cat([torch.zeros_like(pose), pose]), reference_bank=reference_out.reference_bank,
            reference_mask=torch.tensor([False, True])).sample
    err = _maxabs(pred, unet_level["pred_cfg"])
    print(f"denoiser pred_cfg: max abs err {err:.3g}")
    assert err <= DENOISER_TOL


def test_denoiser_pred_nocfg(models, reference_out, unet_level):
    with torch.no_grad():
        pred = models.denoising_unet(unet_level["noisy_latents"], unet_level["timestep"],
                                     audio=unet_level["audio_cond"], pose_features=unet_level["pose_feat"],
                                     reference_bank=reference_out.reference_bank).sample
    err = _maxabs(pred, unet_level["pred_nocfg"])
    print(f"denoiser pred_nocfg: max abs err {err:.3g}")
    assert err <= DENOISER_TOL


@pytest.mark.slow
def test_bank_fp16_rounding_is_explicit(models, reference_out, unet_level):
    """reference_dtype=None (keep fp32) must differ from the official fp16-rounded read, a little."""
    args = dict(audio=unet_level["audio_cond"], pose_features=unet_level["pose_feat"],
                reference_bank=reference_out.reference_bank)
    x, t = unet_level["noisy_latents"], unet_level["timestep"]
    with torch.no_grad():
        official = models.denoising_unet(x, t, **args).sample
        same = models.denoising_unet(x, t, reference_dtype=torch.float16, **args).sample
        kept = models.denoising_unet(x, t, reference_dtype=None, **args).sample
    assert torch.equal(official, same)
    assert 0 < _maxabs(official, kept) < 1e-2
