"""Stage-2 motion-module init (train/motion_init.py) from tiny files in the three layouts: original
AnimateDiff / EchoMimic (as a wrapped training .ckpt with a DDP prefix, a 24-row position table and no
mid block, like AnimateDiff v1), EchoMimic V2's own motion_module.pth, and diffusers' MotionAdapter."""

from __future__ import annotations

import pytest
import torch

from train.motion_init import MOTION, init_motion_modules, read_motion_file, to_original_layout
from train.phases import load_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def denoiser(fixtures):
    from train.modeling import build_models

    cfg = load_config("stage2_temporal", {"init": {"from": "sd", "base_folder": str(fixtures / "weights"),
                                                   "motion_module": None}})
    return build_models(cfg).denoising_unet


def _motion(m):
    return {k: v.clone() for k, v in m.state_dict().items() if MOTION in k}


def test_stage2_config_documents_a_pretrained_motion_module_by_default():
    assert load_config("stage2_temporal")["init"]["motion_module"].endswith("mm_sd_v15_v2.ckpt")
    assert load_config("demo_stage2")["init"]["motion_module"] is None  # the demo recipe starts from zero


def test_animatediff_ckpt_wrapped_prefixed_short_pe_no_mid_block(denoiser, tmp_path):
    own = _motion(denoiser)
    g = torch.Generator().manual_seed(0)
    src = {}
    for k, v in own.items():
        if k.startswith("mid_block."):
            continue  # AnimateDiff v1 has no mid-block module
        if k.endswith("pos_encoder.pe"):
            src[k] = v[:, :24].clone()
        else:
            src[k] = torch.randn(v.shape, generator=g).half()  # fp16 file, fp32 model
    path = tmp_path / "mm_sd_v15.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.items()}, "global_step": 7}, path)
    with pytest.warns(UserWarning, match="mid-block"):
        rep = init_motion_modules(denoiser, path)
    got = _motion(denoiser)
    assert rep.layout == "animatediff" and not rep.unused
    assert rep.not_in_file and all(k.startswith("mid_block.") for k in rep.not_in_file)
    for k, v in src.items():
        if k.endswith("pos_encoder.pe"):
            assert torch.equal(got[k], own[k])  # the same sinusoid: first 24 rows from the file, rest ours
        else:
            assert torch.equal(got[k], v.float()), k
    assert all(torch.equal(got[k], own[k]) for k in rep.not_in_file)
    assert sorted(rep.pe_partial) == sorted(k for k in src if k.endswith("pe"))


def test_echomimic_v2_motion_module_pth_copies_every_tensor(denoiser, fixtures):
    path = fixtures / "weights" / "motion_module.pth"
    want = torch.load(path, weights_only=True)
    rep = init_motion_modules(denoiser, path)
    got = _motion(denoiser)
    assert rep.layout == "animatediff" and not rep.not_in_file and not rep.unused and rep.copied == len(got)
    assert all(torch.equal(got[k], want[k].float()) for k in got)


def test_diffusers_motion_adapter_layout_maps_onto_every_motion_tensor(denoiser, tmp_path):
    from diffusers import MotionAdapter
    from safetensors.torch import save_file

    adapter = MotionAdapter(block_out_channels=(32, 32, 32, 64), motion_layers_per_block=1,
                            motion_mid_block_layers_per_block=1, motion_num_attention_heads=8,
                            motion_max_seq_length=32, use_motion_mid_block=True)
    g = torch.Generator().manual_seed(1)
    sd = {k: (v if k.endswith(".pe") else torch.randn(v.shape, generator=g)).contiguous()
          for k, v in adapter.state_dict().items()}
    save_file(sd, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    rep = init_motion_modules(denoiser, tmp_path / "diffusion_pytorch_model.safetensors")
    assert rep.layout == "diffusers" and not rep.not_in_file and not rep.unused and not rep.pe_partial
    got = _motion(denoiser)
    p = "up_blocks.2.motion_modules.1."
    pairs = {"temporal_transformer.proj_in.weight": "proj_in.weight",
             "temporal_transformer.transformer_blocks.0.attention_blocks.1.to_q.weight":
                 "transformer_blocks.0.attn2.to_q.weight",
             "temporal_transformer.transformer_blocks.0.norms.0.bias": "transformer_blocks.0.norm1.bias",
             "temporal_transformer.transformer_blocks.0.ff_norm.weight": "transformer_blocks.0.norm3.weight",
             "temporal_transformer.transformer_blocks.0.ff.net.0.proj.weight": "transformer_blocks.0.ff.net.0.proj.weight"}
    for ours, theirs in pairs.items():
        assert torch.equal(got[p + ours], sd[p + theirs])
    assert torch.equal(got["mid_block.motion_modules.0.temporal_transformer.proj_out.bias"],
                       sd["mid_block.motion_modules.0.proj_out.bias"])
    # the fixed position table of diffusers equals ours (same sinusoid)
    k = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
    assert torch.allclose(got[k], sd["down_blocks.0.motion_modules.0.transformer_blocks.0.pos_embed.pe"], atol=1e-6)


def test_wrong_size_and_non_motion_files_fail_with_one_clear_line(denoiser, tmp_path):
    own = _motion(denoiser)
    k = next(k for k in own if k.endswith("proj_in.weight"))
    torch.save({k: torch.zeros(320, 320)}, tmp_path / "sd15.pth")
    with pytest.raises(ValueError, match="another UNet size"):
        init_motion_modules(denoiser, tmp_path / "sd15.pth")
    torch.save({"conv_in.weight": torch.zeros(3)}, tmp_path / "not_motion.pth")
    with pytest.raises(ValueError, match="not a motion-module file"):
        read_motion_file(tmp_path / "not_motion.pth")
    with pytest.raises(FileNotFoundError, match="mm_sd_v15_v2"):
        read_motion_file(tmp_path / "missing.ckpt")
    assert to_original_layout({"x.motion_modules.0.temporal_transformer.norm.weight": torch.ones(1)})[1] == "animatediff"


def test_build_models_applies_init_motion_module(fixtures, tmp_path):
    from train.modeling import build_models

    want = torch.load(fixtures / "weights" / "motion_module.pth", weights_only=True)
    cfg = load_config("stage2_temporal", {"init": {"from": "sd", "base_folder": str(fixtures / "weights"),
                                                   "motion_module": str(fixtures / "weights" / "motion_module.pth")}})
    den = build_models(cfg).denoising_unet.state_dict()
    assert all(torch.equal(den[k], want[k].float()) for k in want)
