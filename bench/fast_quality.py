"""Quality cost of the fast options: PSNR of the embedded demo (96 frames, 64x64, 20 DDIM steps, cfg 2) against
the exact output, and the CPU seconds of each run (one thread).

    .venv/bin/python bench/fast_quality.py

The held-out mouth correlation / hand error of the trained demo model (bench/demo_quality.py) is the other
quality measure; run it with the same settings to compare.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402


def main() -> int:
    from echomimic_core.audio import encode_audio, load_audio_encoder
    from echomimic_core.checkpoints import load_models
    from echomimic_core.pipeline import EchoMimicPipeline
    from echomimic_core.pose import fit_length, load_pose_sequence
    from echomimic_core.settings import GenerationSettings

    torch.set_num_threads(1)
    assets = REPO / "echomimic_core" / "assets"
    demo = assets / "demo"
    models = load_models(assets / "demo_model", variant="normal", dtype=torch.float32, device="cpu")
    feats = encode_audio(load_audio_encoder(models.audio_encoder_path), str(demo / "audio.wav"), fps=24)
    poses = fit_length(load_pose_sequence(demo / "poses.npz"), feats.num_frames, "loop")
    pipe = EchoMimicPipeline.from_models(models)
    base = GenerationSettings(width=64, height=64, steps=20, guidance_scale=2.0, seed=0)
    plain = dict(window_batch_size=1, pose_feature_cache_mb=0.0, cache_reference_kv=False, skip_uncond_audio=False)
    runs = {"exact, plain order (official)": base.replace(**plain), "exact, speed-ups on (default)": base,
            "no_overlap windows": base.replace(context_schedule="no_overlap"),
            "dpm++2m, 10 steps": base.replace(scheduler="dpm++2m", steps=10),
            "unipc, 10 steps": base.replace(scheduler="unipc", steps=10),
            "dpm++2m 10 steps + no_overlap": base.replace(scheduler="dpm++2m", steps=10, context_schedule="no_overlap")}
    ref = None
    print(f"{'run':<32} {'CPU s':>7} {'PSNR dB':>8}")
    for name, settings in runs.items():
        t0 = time.process_time()
        frames = pipe.generate(str(demo / "reference.png"), feats.frames(feats.num_frames), poses, settings).frames
        cpu = time.process_time() - t0
        ref = frames if ref is None else ref
        mse = float(((frames - ref) ** 2).mean())
        psnr = float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()
        print(f"{name:<32} {cpu:>7.1f} {psnr:>8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
