"""Random-weight EchoMimicV2 model folders in the official ``pretrained_weights`` layout, for benchmarks.

No real weights can be downloaded here, so the side-by-side benchmark (``bench/vs_official.py``) and the GPU
script (``bench/gpu.sh``) build a folder that both the official code and ours load: the networks are this
library's weight-compatible classes (same keys as the official ones) built from the official configs,
scaled by a size preset, filled with seeded random weights and written with ``save_state_dict``.

Sizes (the SD1.5 / sd-image-variations layout throughout: 4 levels, mid block, motion modules everywhere):

* ``tiny``   - fixture-like: UNet (32, 32, 32, 64) x 1 layer, 1-layer whisper; seconds on a CPU.
* ``medium`` - UNet (32, 64, 128, 128) x 1 layer, 8 heads, VAE (16, 32, 64, 64), whisper-tiny encoder
  (4 layers); the CPU side-by-side setting (256x256, 48 frames, 4 steps, cfg 2.5) is 24 denoiser calls of
  24 frames, about 4 s each on one idle core (the motion modules' GroupNorm(32) sets the smallest width).
* ``full``   - the official sizes: UNet (320, 640, 1280, 1280), PoseEncoder (320, 3, (16, 32, 96, 256)),
  sd-vae-ft-mse VAE, whisper-tiny encoder. About 6 GB on disk in fp16; build it on a GPU.

Weights follow the fixture recipe (shared/fixtures/README.md): matrices and kernels N(0, g^2/fan_in) with
g = 0.3 for both UNets and 1 elsewhere, norm scales 1 + 0.1 N(0, 1), biases 0.05 N(0, 1). The official
zero initialisations (PoseEncoder ``conv_out``, motion-module ``proj_out``) are replaced too, so every
weight reaches the output. Tensors are stored in float16 (float buffers such as the motion modules'
position tables in float32); both sides read the same values. The whisper decoder is shrunk (64-token
vocabulary): it is never run, only loaded. The ``*_acc`` files are links to the normal ones (random
weights: the accelerated preset differs only in steps, guidance and seed).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from echomimic_core.checkpoints import save_checkpoint  # noqa: E402  (after the path set-up)

SIZES = {
    "tiny": {"blocks": (32, 32, 32, 64), "layers": 1, "heads": 4, "groups": 8, "pose": (8, 16, 16, 32),
             "vae": (16, 16, 32, 32), "vae_layers": 1, "vae_groups": 8, "whisper_layers": 1},
    "medium": {"blocks": (32, 64, 128, 128), "layers": 1, "heads": 8, "groups": 32, "pose": (8, 16, 32, 64),
               "vae": (16, 32, 64, 64), "vae_layers": 1, "vae_groups": 16, "whisper_layers": 4},
    "full": {"blocks": (320, 640, 1280, 1280), "layers": 2, "heads": 8, "groups": 32, "pose": (16, 32, 96, 256),
             "vae": (128, 256, 512, 512), "vae_layers": 2, "vae_groups": 32, "whisper_layers": 4},
}
MARKER = "bench_model.json"


def base_unet_config(size: str) -> dict:
    """sd-image-variations ``unet/config.json`` with the preset's widths (cross_attention_dim stays 768:
    the official base is a CLIP-image UNet; the denoiser's audio attention is 384 wide by the additional kwargs)."""
    from echomimic_core.models import SD_IMAGE_VARIATIONS_UNET_CONFIG

    s = SIZES[size]
    cfg = dict(SD_IMAGE_VARIATIONS_UNET_CONFIG)
    cfg.update({"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.31.0",
                "block_out_channels": list(s["blocks"]), "layers_per_block": s["layers"],
                "attention_head_dim": s["heads"], "norm_num_groups": s["groups"]})
    return cfg


def vae_config(size: str) -> dict:
    s = SIZES[size]
    n = len(s["vae"])
    return {"_class_name": "AutoencoderKL", "_diffusers_version": "0.31.0", "act_fn": "silu",
            "block_out_channels": list(s["vae"]), "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
            "layers_per_block": s["vae_layers"], "norm_num_groups": s["vae_groups"], "sample_size": 256,
            "scaling_factor": 0.18215}


def whisper_dims(size: str) -> dict:
    return {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
            "n_audio_layer": SIZES[size]["whisper_layers"], "n_vocab": 64, "n_text_ctx": 8, "n_text_state": 64,
            "n_text_head": 2, "n_text_layer": 1}


@torch.no_grad()
def randomise(module: torch.nn.Module, seed: int, gain: float) -> torch.nn.Module:
    """Fill every parameter with the fixture recipe (buffers are kept: the position tables are computed)."""
    device = next(module.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    for name, p in module.named_parameters():
        if p.ndim >= 2:
            p.normal_(0.0, gain / (p[0].numel() ** 0.5), generator=g)
        elif name.endswith("weight"):  # LayerNorm / GroupNorm scales
            p.normal_(1.0, 0.1, generator=g)
        else:
            p.normal_(0.0, 0.05, generator=g)
    return module


def _half_state(module: torch.nn.Module) -> dict:
    params = {n for n, _ in module.named_parameters()}
    return {k: (v.half() if k in params and v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in module.state_dict().items()}


def _link(src: Path, dst: Path) -> None:
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    os.symlink(src.name, dst)


def build_model_folder(out, size: str = "medium", seed: int = 0, device: str = "cpu", log=print) -> Path:
    """Write a complete random-weight model folder (both presets) at ``out``; reuses a finished one."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from echomimic_core.checkpoints import save_state_dict
    from echomimic_core.models import (OFFICIAL_NOISE_SCHEDULER_KWARGS, OFFICIAL_UNET_ADDITIONAL_KWARGS,
                                       DenoisingUNet3DModel, PoseEncoder, ReferenceUNet2DModel, denoising_unet_config,
                                       reference_unet_config, split_motion_state_dict)
    from train.demo_base import whisper_state

    out = Path(out)
    marker = out / MARKER
    want = {"size": size, "seed": seed, "format": 1}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        log(f"model folder {out} ({size}) already built")
        return out
    t0 = time.perf_counter()
    s = SIZES[size]
    unet_dir = out / "sd-image-variations-diffusers" / "unet"
    unet_dir.mkdir(parents=True, exist_ok=True)
    base_cfg = base_unet_config(size)
    (unet_dir / "config.json").write_text(json.dumps(base_cfg, indent=1) + "\n")
    kwargs = {k: v for k, v in base_cfg.items() if not k.startswith("_")}
    with torch.device(device):
        base = randomise(UNet2DConditionModel(**kwargs), seed, 0.3)
    save_state_dict(_half_state(base), unet_dir / "diffusion_pytorch_model.safetensors")
    del base
    with torch.device(device):
        ref = randomise(ReferenceUNet2DModel(**reference_unet_config(base_cfg)), seed + 1, 0.3)
    save_state_dict(_half_state(ref), out / "reference_unet.pth")
    del ref
    with torch.device(device):
        den = randomise(DenoisingUNet3DModel(**denoising_unet_config(base_cfg, OFFICIAL_UNET_ADDITIONAL_KWARGS)),
                        seed + 2, 0.3)
    motion, rest = split_motion_state_dict(_half_state(den))
    del den
    save_state_dict(rest, out / "denoising_unet.pth")
    save_state_dict(motion, out / "motion_module.pth")
    del motion, rest
    _link(out / "denoising_unet.pth", out / "denoising_unet_acc.pth")
    _link(out / "motion_module.pth", out / "motion_module_acc.pth")
    with torch.device(device):
        pose = randomise(PoseEncoder(conditioning_embedding_channels=s["blocks"][0], conditioning_channels=3,
                                     block_out_channels=s["pose"]), seed + 3, 1.0)
    save_state_dict(_half_state(pose), out / "pose_encoder.pth")
    vae_dir = out / "sd-vae-ft-mse"
    vae_dir.mkdir(exist_ok=True)
    vcfg = vae_config(size)
    (vae_dir / "config.json").write_text(json.dumps(vcfg, indent=1) + "\n")
    with torch.device(device):
        vae = randomise(AutoencoderKL(**{k: v for k, v in vcfg.items() if not k.startswith("_")}), seed + 4, 1.0)
    save_state_dict(_half_state(vae), vae_dir / "diffusion_pytorch_model.safetensors")
    del vae
    (out / "audio_processor").mkdir(exist_ok=True)
    dims = whisper_dims(size)
    save_checkpoint({"dims": dims, "model_state_dict": whisper_state(dims, seed + 5)}, out / "audio_processor" / "tiny.pt")
    (out / "inference_config.json").write_text(json.dumps(
        {"unet_additional_kwargs": OFFICIAL_UNET_ADDITIONAL_KWARGS,
         "noise_scheduler_kwargs": OFFICIAL_NOISE_SCHEDULER_KWARGS}, indent=1) + "\n")
    marker.write_text(json.dumps(want) + "\n")
    log(f"built {size} random-weight model folder {out} in {time.perf_counter() - t0:.1f} s")
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--size", choices=sorted(SIZES), default="medium")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="where to build the networks (cuda is much faster for full)")
    a = ap.parse_args(argv)
    build_model_folder(a.out, a.size, a.seed, a.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
