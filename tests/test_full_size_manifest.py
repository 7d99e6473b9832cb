"""The FULL-SIZE architectures, built on the meta device, match ``full_size_manifest.json`` key for key
and shape for shape (configs taken from the manifest itself). The ``whisper_tiny.pt`` entry is checked in
``test_audio_manifest.py`` (transformers-based encoder, key names mapped)."""

from __future__ import annotations

import json

import pytest
import torch

from echomimic_core.models import (DenoisingUNet3DModel, PoseEncoder, ReferenceUNet2DModel, denoising_unet_config,
                                   reference_unet_config, split_motion_state_dict)


@pytest.fixture(scope="module")
def manifest(fixtures):
    path = fixtures / "full_size_manifest.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return json.loads(path.read_text())


def _shapes(entries):
    return {e["key"]: tuple(e["shape"]) for e in entries}


def _compare(name, entry, state, params=None):
    expected = _shapes(entry["keys"])
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    assert not missing and not extra and not wrong, (name, missing[:10], extra[:10], wrong[:10])
    assert len(got) == entry["num_keys"]
    assert sum(v.numel() for v in state.values()) == entry["num_elements"]
    if params is not None:
        assert params == entry["num_parameters"], (name, params, entry["num_parameters"])
    print(f"{name}: {len(got)} keys, {entry['num_parameters']:,} parameters")


@pytest.fixture(scope="module")
def full_denoiser(manifest):
    cfg = denoising_unet_config(manifest["sd_image_variations_unet_config"], manifest["unet_additional_kwargs"])
    with torch.device("meta"):
        return DenoisingUNet3DModel(**cfg)


def test_reference_unet_full_size(manifest):
    with torch.device("meta"):
        model = ReferenceUNet2DModel(**reference_unet_config(manifest["sd_image_variations_unet_config"]))
    _compare("reference_unet.pth", manifest["reference_unet.pth"], model.state_dict(),
             sum(p.numel() for p in model.parameters()))
    assert len(model.transformer_blocks()) == 16


@pytest.mark.slow
def test_denoising_unet_and_motion_module_full_size(manifest, full_denoiser):
    motion, rest = split_motion_state_dict(full_denoiser.state_dict())
    motion_params = sum(p.numel() for _, p in full_denoiser.named_motion_module_parameters())
    rest_params = sum(p.numel() for _, p in full_denoiser.named_spatial_parameters())
    _compare("motion_module.pth", manifest["motion_module.pth"], motion, motion_params)
    _compare("denoising_unet.pth", manifest["denoising_unet.pth"], rest, rest_params)
    full = manifest.get("denoising_unet_full_state_dict")
    if full:
        assert len(full_denoiser.state_dict()) == full["num_keys"]
        assert sum(p.numel() for p in full_denoiser.parameters()) == full["num_parameters"]
    assert len(full_denoiser.transformer_blocks()) == 16
    assert sum(1 for k in motion if k.endswith("pos_encoder.pe")) == 2 * 21  # 21 motion modules


def test_pose_encoder_full_size(manifest):
    entry = manifest["pose_encoder.pth"]
    shapes = {k: torch.empty(s, device="meta") for k, s in _shapes(entry["keys"]).items()}
    with torch.device("meta"):
        model = PoseEncoder(**PoseEncoder.config_from_state_dict(shapes))
    _compare("pose_encoder.pth", entry, model.state_dict(), sum(p.numel() for p in model.parameters()))

