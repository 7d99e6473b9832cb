"""Sampler speed on the CPU: seconds per frame per denoising step (and per decoded frame).

* ``tiny``: the fixture weights (official layout, tiny random networks), loaded with ``load_models``.
* ``full``: the full-size official architecture (SD1.5-size ReferenceNet and 3-D denoiser with motion
  modules, PoseEncoder (320, 3, (16, 32, 96, 256)), sd-vae-ft-mse-size VAE) with random weights - no real
  weights exist here - at a small resolution. Needs ~9 GB of RAM in float32.

    .venv/bin/python bench/sampler.py                        # tiny at 64 and 256 px, full at 128 px
    .venv/bin/python bench/sampler.py --config full --size 256 --frames 12 --steps 1
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _fixtures() -> Path:
    return Path(os.environ.get("ECHOMIMIC_FIXTURES_DIR", REPO.parent / "shared" / "fixtures"))


def tiny_pipeline(dtype=torch.float32):
    from echomimic_core.checkpoints import load_models
    from echomimic_core.pipeline import EchoMimicPipeline

    models = load_models(_fixtures() / "weights", variant="normal", dtype=dtype, device="cpu")
    return EchoMimicPipeline.from_models(models)


def full_pipeline(dtype=torch.float32):
    """Full-size official architecture with random weights (built on 'meta', then filled in place)."""
    from diffusers import AutoencoderKL

    from echomimic_core.models import (OFFICIAL_POSE_ENCODER_KWARGS, OFFICIAL_UNET_ADDITIONAL_KWARGS,
                                       SD_IMAGE_VARIATIONS_UNET_CONFIG, DenoisingUNet3DModel, PoseEncoder,
                                       ReferenceUNet2DModel, denoising_unet_config, reference_unet_config)
    from echomimic_core.pipeline import EchoMimicPipeline
    from echomimic_core.sampling import OFFICIAL_SCHEDULER_KWARGS

    def realise(module):
        module = module.to_empty(device="cpu").to(dtype)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in module.named_parameters():
                if p.ndim >= 2:
                    fan_in = p[0].numel()
                    p.normal_(0.0, 0.3 / fan_in ** 0.5, generator=g)
                elif "norm" in name and name.endswith("weight"):
                    p.fill_(1.0)
                else:
                    p.zero_()
            for name, b in module.named_buffers():
                if b.is_floating_point():
                    b.zero_()
        return module.eval()

    with torch.device("meta"):
        ref = ReferenceUNet2DModel(**reference_unet_config(SD_IMAGE_VARIATIONS_UNET_CONFIG))
        den = DenoisingUNet3DModel(**denoising_unet_config(SD_IMAGE_VARIATIONS_UNET_CONFIG,
                                                           OFFICIAL_UNET_ADDITIONAL_KWARGS))
        pose = PoseEncoder(**OFFICIAL_POSE_ENCODER_KWARGS)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                            block_out_channels=(128, 256, 512, 512),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            norm_num_groups=32, sample_size=256)
    ref, den, pose, vae = (realise(m) for m in (ref, den, pose, vae))
    _fill_position_tables(den)
    params = sum(p.numel() for m in (ref, den, pose, vae) for p in m.parameters())
    return EchoMimicPipeline(vae, ref, den, pose, OFFICIAL_SCHEDULER_KWARGS), params


def _fill_position_tables(module) -> None:
    """The motion modules' sinusoidal tables are buffers (loaded from checkpoints); recompute them."""
    from echomimic_core.models.motion_module import SinusoidalPositionTable

    for m in module.modules():
        if isinstance(m, SinusoidalPositionTable):
            m.pe.copy_(SinusoidalPositionTable.table(m.pe.shape[-1], m.pe.shape[-2]).to(m.pe.dtype))


def measure(pipe, size: int, frames: int, steps: int, cfg: float, tokens: int, **options) -> dict:
    from echomimic_core.profile import Profiler
    from echomimic_core.settings import GenerationSettings

    audio = torch.randn(frames, tokens, 384, generator=torch.Generator().manual_seed(0))
    poses = torch.rand(1, 3, frames, size, size, generator=torch.Generator().manual_seed(1))
    image = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    settings = GenerationSettings(width=size, height=size, steps=steps, guidance_scale=cfg, seed=1, **options)
    prof = Profiler(pipe.device).start()
    sink = []
    result = pipe.generate(image, audio, poses, settings, on_frames=lambda f: sink.append(f.shape[0]), profiler=prof)
    prof.stop()
    n = result.num_frames
    ph = prof.as_dict()["phases"]
    denoise = ph.get("denoise", 0.0) + ph.get("poses", 0.0)
    return {"frames": n, "steps": steps, "windows": len(result.windows_per_step[0]), "total_s": prof.total,
            "denoise_s": denoise, "per_frame_step": denoise / (n * steps),
            "decode_per_frame": (ph.get("decode", 0.0) + ph.get("write", 0.0)) / n, "unet_batch": result.unet_calls[0],
            "phases": ph}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("tiny", "full", "both"), default="both")
    parser.add_argument("--size", type=int, nargs="+", default=None, help="square frame sizes (px)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cfg", type=float, default=2.5)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "1")))
    parser.add_argument("--plain", action="store_true", help="exact speed-ups off (one window per call, no caches)")
    parser.add_argument("--scheduler", default="ddim")
    parser.add_argument("--window-batch", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = dict(scheduler=args.scheduler, window_batch_size=args.window_batch)
    if args.plain:
        options.update(window_batch_size=1, pose_feature_cache_mb=0.0, cache_reference_kv=False, skip_uncond_audio=False)
    rows = []
    if args.config in ("tiny", "both"):
        pipe = tiny_pipeline()
        import json

        layers = json.loads((_fixtures() / "config.json").read_text())["whisper_dims"]["n_audio_layer"]
        for size in args.size or [64, 256]:
            rows.append(("tiny", size, measure(pipe, size, args.frames, args.steps, args.cfg, 10 * (layers + 1),
                                                 **options)))
        del pipe
        gc.collect()
    if args.config in ("full", "both"):
        t0 = time.perf_counter()
        pipe, params = full_pipeline()
        print(f"built full-size random networks ({params / 1e9:.2f} B params) in {time.perf_counter() - t0:.0f} s",
              flush=True)
        for size in args.size or [128]:
            rows.append(("full", size, measure(pipe, size, args.frames, args.steps, args.cfg, 50, **options)))
    print(f"CPU, {args.threads} threads, float32, {args.frames} frames, {args.steps} steps, cfg {args.cfg}, "
          f"scheduler {args.scheduler}, {'plain' if args.plain else 'exact speed-ups on'}")
    print(f"{'config':<6} {'size':>5} {'windows/step':>12} {'unet batch':>10} {'s/frame/step':>13} "
          f"{'decode s/frame':>15} {'total s':>8}")
    for name, size, r in rows:
        print(f"{name:<6} {size:>5} {r['windows']:>12} {r['unet_batch']:>10} {r['per_frame_step']:>13.4f} "
              f"{r['decode_per_frame']:>15.4f} {r['total_s']:>8.1f}")
        print("       phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in r["phases"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
