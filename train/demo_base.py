"""Write the starting folder ("pretrained_weights" stand-in) for the embedded demo model.

The demo model is a TINY configuration of the real EchoMimicV2 architecture trained from scratch on the
synthetic talking-figure data (``train/synthetic.py``). ``train/apdh.py`` with ``init.from: sd`` wants an
official-layout base folder; this script writes one with tiny numbers:

    BASE/sd-image-variations-diffusers/unet/config.json + diffusion_pytorch_model.safetensors
          a seeded random UNet2DConditionModel (both UNets start from it, the official from_pretrained_2d rule)
    BASE/audio_processor/tiny.pt
          an openai-whisper checkpoint (1 encoder layer, 384 wide, so the UNet's 384-d audio cross-attention
          is the official one) with FIXED SEEDED weights (never trained; sinusoidal positions as in whisper)
    BASE/sd-vae-ft-mse/
          a copy of the small AutoencoderKL from ``train/vae.py`` (``--vae``)
    BASE/inference_config.json
          unet_additional_kwargs (tiny motion modules) + the official scheduler settings

    python train/demo_base.py BASE --vae VAE_DIR [--blocks 32,64,64,128] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WHISPER_DIMS = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 1,
                "n_vocab": 64, "n_text_ctx": 8, "n_text_state": 64, "n_text_head": 2, "n_text_layer": 1}


def unet_config(blocks=(32, 64, 64, 128), heads: int = 4, groups: int = 8, sample_size: int = 8) -> dict:
    blocks = [int(b) for b in blocks]
    return {
        "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.31.0",
        "act_fn": "silu", "attention_head_dim": int(heads), "block_out_channels": blocks,
        "center_input_sample": False, "cross_attention_dim": 384, "conv_in_kernel": 3, "conv_out_kernel": 3,
        "down_block_types": ["CrossAttnDownBlock2D"] * (len(blocks) - 1) + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (len(blocks) - 1),
        "downsample_padding": 1, "dropout": 0.0, "flip_sin_to_cos": True, "freq_shift": 0,
        "in_channels": 4, "out_channels": 4, "layers_per_block": 1, "mid_block_scale_factor": 1,
        "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-5, "norm_num_groups": int(groups),
        "sample_size": int(sample_size), "transformer_layers_per_block": 1, "upcast_attention": False,
        "use_linear_projection": False, "only_cross_attention": False, "time_embedding_type": "positional",
        "resnet_time_scale_shift": "default",
    }


def inference_config(mm_heads: int = 4, mm_max_len: int = 32) -> dict:
    from echomimic_core.models import OFFICIAL_NOISE_SCHEDULER_KWARGS, OFFICIAL_UNET_ADDITIONAL_KWARGS

    extra = json.loads(json.dumps(OFFICIAL_UNET_ADDITIONAL_KWARGS))
    extra["motion_module_kwargs"]["num_attention_heads"] = int(mm_heads)
    extra["motion_module_kwargs"]["temporal_position_encoding_max_len"] = int(mm_max_len)
    return {"unet_additional_kwargs": extra, "noise_scheduler_kwargs": dict(OFFICIAL_NOISE_SCHEDULER_KWARGS)}


def _sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """whisper's sinusoidal positional table (the encoder's fixed positional_embedding)."""
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float64))
    t = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1).float()


def whisper_state(dims: dict = WHISPER_DIMS, seed: int = 0) -> dict:
    """openai-whisper model_state_dict with seeded weights: matrices/kernels N(0, 1/fan_in), norms 1, biases 0."""
    g = torch.Generator().manual_seed(seed)

    def mat(*shape):
        fan_in = int(torch.tensor(shape[1:]).prod())
        return torch.randn(shape, generator=g) / math.sqrt(fan_in)

    def block(prefix, n, cross):
        s = {}
        for a in ("attn",) + (("cross_attn",) if cross else ()):
            for q in ("query", "key", "value", "out"):
                s[f"{prefix}.{a}.{q}.weight"] = mat(n, n)
                if q != "key":
                    s[f"{prefix}.{a}.{q}.bias"] = torch.zeros(n)
            s[f"{prefix}.{a}_ln.weight"], s[f"{prefix}.{a}_ln.bias"] = torch.ones(n), torch.zeros(n)
        s[f"{prefix}.mlp.0.weight"], s[f"{prefix}.mlp.0.bias"] = mat(4 * n, n), torch.zeros(4 * n)
        s[f"{prefix}.mlp.2.weight"], s[f"{prefix}.mlp.2.bias"] = mat(n, 4 * n), torch.zeros(n)
        s[f"{prefix}.mlp_ln.weight"], s[f"{prefix}.mlp_ln.bias"] = torch.ones(n), torch.zeros(n)
        return s

    n, m = dims["n_audio_state"], dims["n_mels"]
    s = {"encoder.positional_embedding": _sinusoids(dims["n_audio_ctx"], n),
         "encoder.conv1.weight": mat(n, m, 3), "encoder.conv1.bias": torch.zeros(n),
         "encoder.conv2.weight": mat(n, n, 3), "encoder.conv2.bias": torch.zeros(n)}
    for i in range(dims["n_audio_layer"]):
        s.update(block(f"encoder.blocks.{i}", n, False))
    s["encoder.ln_post.weight"], s["encoder.ln_post.bias"] = torch.ones(n), torch.zeros(n)
    t = dims["n_text_state"]
    s["decoder.positional_embedding"] = torch.randn(dims["n_text_ctx"], t, generator=g) * 0.01
    s["decoder.token_embedding.weight"] = torch.randn(dims["n_vocab"], t, generator=g) * 0.02
    for i in range(dims["n_text_layer"]):
        s.update(block(f"decoder.blocks.{i}", t, True))
    s["decoder.ln.weight"], s["decoder.ln.bias"] = torch.ones(t), torch.zeros(t)
    return {k: v.half() for k, v in s.items()}


def write_base(out: str | Path, vae_dir: str | Path, blocks=(32, 64, 64, 128), heads: int = 4, seed: int = 0,
               mm_heads: int = 4) -> Path:
    from diffusers import UNet2DConditionModel

    from echomimic_core.checkpoints import save_checkpoint, save_state_dict

    out = Path(out)
    unet_dir = out / "sd-image-variations-diffusers" / "unet"
    unet_dir.mkdir(parents=True, exist_ok=True)
    cfg = unet_config(blocks, heads)
    (unet_dir / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    save_state_dict(unet.state_dict(), unet_dir / "diffusion_pytorch_model.safetensors")
    (out / "audio_processor").mkdir(parents=True, exist_ok=True)
    save_checkpoint({"dims": dict(WHISPER_DIMS), "model_state_dict": whisper_state(WHISPER_DIMS, seed + 1)},
                    out / "audio_processor" / "tiny.pt")
    vae_out = out / "sd-vae-ft-mse"
    if vae_out.exists():
        shutil.rmtree(vae_out)
    vae_out.mkdir()
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        shutil.copy2(Path(vae_dir) / name, vae_out / name)
    (out / "inference_config.json").write_text(json.dumps(inference_config(mm_heads), indent=1) + "\n")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--vae", required=True, help="diffusers AutoencoderKL folder (train/vae.py output)")
    ap.add_argument("--blocks", default="32,64,64,128", help="UNet block_out_channels")
    ap.add_argument("--heads", type=int, default=4, help="UNet attention_head_dim (diffusers: heads)")
    ap.add_argument("--mm-heads", type=int, default=4, help="motion-module attention heads")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    write_base(a.out, a.vae, [int(x) for x in a.blocks.split(",")], a.heads, a.seed, a.mm_heads)
    print(json.dumps({"base": a.out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
