"""Peak memory of a whole generation vs video length (tiny fixture models, CPU).

Each video length runs in a fresh subprocess (so peaks do not mix) that loads the tiny official-layout
weights, draws a pose sequence per window, samples and streams the decoded frames into an mp4 with
audio. Prints a table of peak RSS (ru_maxrss) and the 600/24 ratio, which must stay <= 1.2. By default it runs
twice: with glibc's allocator as is (what a user gets; the pipeline calls malloc_trim after every CPU
window so heap fragmentation does not creep up with the number of windows - without that the 600/24
ratio was ~1.17) and with a fixed mmap threshold, which shows the pipeline's own memory without any
allocator effect (what remains is the latents and audio features, which scale with length by design).

    .venv/bin/python bench/memory.py                      # 24, 120, 600 frames at 256x256, 1 step
    .venv/bin/python bench/memory.py --frames 24 600 --size 128 --steps 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _fixtures() -> Path:
    return Path(os.environ.get("ECHOMIMIC_FIXTURES_DIR", REPO.parent / "shared" / "fixtures"))


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def child(frames: int, size: int, steps: int, cfg: float, out_dir: Path) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from echomimic_core.checkpoints import load_models
    from echomimic_core.pipeline import EchoMimicPipeline
    from echomimic_core.pose import fit_length, load_pose_sequence
    from echomimic_core.video import VideoWriter

    fixtures = _fixtures()
    models = load_models(fixtures / "weights", variant="normal", dtype=torch.float32, device="cpu")
    pipe = EchoMimicPipeline.from_models(models)
    pose_dir = out_dir / "poses"
    if not pose_dir.is_dir():
        pose_dir.mkdir()
        for k in range(3):
            (pose_dir / f"{k}.npy").write_bytes((fixtures / "pose_drawing" / f"01_{k}.npy").read_bytes())
    poses = fit_length(load_pose_sequence(pose_dir), frames, "pingpong")
    # audio features: random per-frame chunks with the tiny whisper's token count (the audio encoder is not
    # part of the sampler; its cost is per 30 s segment anyway)
    tokens = 10 * (json.loads((fixtures / "config.json").read_text())["whisper_dims"]["n_audio_layer"] + 1)
    audio = torch.randn(frames, tokens, 384, generator=torch.Generator().manual_seed(0))
    wave = (np.sin(np.arange(int(16000 * frames / 24)) * 0.05) * 0.3).astype(np.float32)
    image = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    baseline = _rss_mb()
    t0 = time.perf_counter()
    target = out_dir / f"mem_{frames}.mp4"
    with VideoWriter(target, fps=24, audio=(wave, 16000)) as writer:
        result = pipe.generate(image, audio, poses, width=size, height=size, steps=steps, guidance_scale=cfg,
                               seed=1, on_frames=writer.write)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return {"frames": result.num_frames, "peak_rss_mb": peak, "baseline_rss_mb": baseline,
            "seconds": seconds, "mp4_bytes": target.stat().st_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[24, 120, 600])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--cfg", type=float, default=2.5)
    parser.add_argument("--malloc", choices=("default", "mmap", "both"), default="both",
                        help="glibc allocator as is, and/or with MALLOC_MMAP_THRESHOLD_=65536 (large blocks always "
                             "mmapped, so heap fragmentation does not show up as growth)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.size, args.steps, args.cfg, Path(args.out_dir))))
        return 0

    modes = ["default", "mmap"] if args.malloc == "both" else [args.malloc]
    status = 0
    for mode in modes:
        env = dict(os.environ)
        if mode == "mmap":
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.frames:
                cmd = [sys.executable, __file__, "--child", str(n), "--size", str(args.size), "--steps",
                       str(args.steps), "--cfg", str(args.cfg), "--out-dir", tmp]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return 1
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"tiny fixture models, CPU fp32, {args.size}x{args.size}, {args.steps} steps, cfg {args.cfg}, "
              f"frames streamed to an mp4 with audio; allocator: "
              f"{'glibc default' if mode == 'default' else 'MALLOC_MMAP_THRESHOLD_=65536'}")
        print(f"{'frames':>7} {'peak RSS MiB':>13} {'after load MiB':>15} {'peak-load MiB':>14} {'seconds':>8}")
        for r in rows:
            print(f"{r['frames']:>7} {r['peak_rss_mb']:>13.1f} {r['baseline_rss_mb']:>15.1f} "
                  f"{r['peak_rss_mb'] - r['baseline_rss_mb']:>14.1f} {r['seconds']:>8.1f}")
        first, last = rows[0], rows[-1]
        ratio = last["peak_rss_mb"] / first["peak_rss_mb"]
        print(f"peak ratio {last['frames']}/{first['frames']} frames: {ratio:.3f} (limit 1.2)\n", flush=True)
        status |= 0 if ratio <= 1.2 else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
