"""``demo``: a video out of the box, with the embedded tiny demo model and shipped inputs.

Without ``--models`` the embedded demo model (``echomimic_core/assets/demo_model``: a tiny EchoMimicV2
trained from scratch on synthetic talking figures at 64x64, see ``train/make_demo_model.sh``) animates the
shipped reference figure with the shipped speech and hand poses (``echomimic_core/assets/demo``); the
frames are enlarged for viewing (``--display-scale``). With ``--models DIR`` the same shipped inputs go
through real official weights with the normal preset's defaults (768x768, 30 steps, cfg 2.5).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .generate import DTYPES, check_args, render, run_guarded

HELP = "make a demo video with the embedded tiny model (or --models DIR) and the shipped demo inputs"

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_MODEL = ASSETS / "demo_model"
DEMO_INPUTS = ASSETS / "demo"
DEFAULT_OUT = "echomimic_v2_demo.mp4"


def demo_settings() -> dict:
    """Sampling defaults of the embedded model (``assets/demo/demo.json``)."""
    defaults = {"width": 64, "height": 64, "steps": 20, "cfg": 2.0, "seed": 0, "display_scale": 4,
                "context_frames": 12, "context_overlap": 3}
    path = DEMO_INPUTS / "demo.json"
    if path.is_file():
        defaults.update(json.loads(path.read_text()).get("embedded_model", {}))
    return defaults


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=None, metavar="DIR",
                        help="official pretrained_weights folder (default: the embedded tiny demo model)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="OUT.mp4",
                        help=f"output video (default ./{DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=None, help="initial noise seed")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps")
    parser.add_argument("--cfg", type=float, default=None, help="guidance scale")
    parser.add_argument("--width", type=int, default=None,
                        help="generation width (default: 64 for the embedded model, 768 with --models)")
    parser.add_argument("--height", type=int, default=None,
                        help="generation height (default: 64 for the embedded model, 768 with --models)")
    parser.add_argument("--display-scale", type=int, default=None,
                        help="enlarge the written frames by this integer factor (default: 4 for the embedded "
                             "model, 1 with --models)")
    parser.add_argument("--image", default=None, help="reference image (default: the shipped demo figure)")
    parser.add_argument("--audio", default=None, help="speech audio (default: the shipped demo speech)")
    parser.add_argument("--poses", default=None, help="pose sequence (default: the shipped demo hand poses)")
    parser.add_argument("--max-frames", type=int, default=None, help="cap on the number of frames")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                        help="weight dtype (default: float16 on cuda, float32 on cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def generate_args(args: argparse.Namespace) -> argparse.Namespace:
    """The ``generate`` command's arguments for this demo run."""
    embedded = args.models is None
    s = demo_settings() if embedded else {}
    out = Path(args.out).expanduser().resolve()
    return argparse.Namespace(
        models=str(DEMO_MODEL if embedded else args.models),
        image=args.image or str(DEMO_INPUTS / "reference.png"),
        audio=args.audio or str(DEMO_INPUTS / "audio.wav"),
        poses=args.poses or str(DEMO_INPUTS / "poses.npz"),
        out=str(out), preset="normal",
        steps=args.steps if args.steps is not None else s.get("steps"),
        cfg=args.cfg if args.cfg is not None else s.get("cfg"),
        seed=args.seed if args.seed is not None else s.get("seed"),
        width=args.width or s.get("width", 768), height=args.height or s.get("height", 768),
        fps=24.0, context_frames=int(s.get("context_frames", 12)), context_overlap=int(s.get("context_overlap", 3)),
        max_frames=args.max_frames, pose_policy="loop", device=args.device, dtype=args.dtype, crf=None, decode_chunk=1,
        quiet=args.quiet,
        display_scale=args.display_scale if args.display_scale is not None else int(s.get("display_scale", 1)),
    )


def run(args: argparse.Namespace) -> int:
    return run_guarded(_run, args)


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import InputError, ModelFilesNotFoundError

    if args.threads:
        torch.set_num_threads(int(args.threads))
    gen = generate_args(args)
    if gen.display_scale < 1:
        raise InputError(f"--display-scale must be >= 1 (got {gen.display_scale})")
    if args.models is None and not any((DEMO_MODEL / f"denoising_unet{e}").is_file() for e in (".safetensors", ".pth")):
        raise ModelFilesNotFoundError(f"the embedded demo model is missing from {DEMO_MODEL} (broken install?)")
    check_args(gen)
    t0 = time.perf_counter()
    which = "the embedded tiny demo model" if args.models is None else f"the models in {args.models}"
    print(f"demo: {which}, {gen.width}x{gen.height}, {Path(gen.audio).name} + {Path(gen.poses).name}",
          file=sys.stderr)
    scale = int(gen.display_scale)
    result = render(gen, display_scale=scale)
    size = f"{gen.width * scale}x{gen.height * scale}"
    print(f"wrote {gen.out}: {result.num_frames} frames at {gen.fps:g} fps ({result.num_frames / gen.fps:.2f} s), "
          f"{size}, {len(result.timesteps)} steps, cfg {result.guidance_scale:g}, seed {result.seed}, "
          f"{time.perf_counter() - t0:.1f} s")
    return 0
