"""``demo``: a video out of the box, with the embedded tiny demo model and shipped inputs.

Without ``--models`` the embedded demo model (``echomimic_core/assets/demo_model``: a tiny EchoMimicV2
trained from scratch on synthetic talking figures at 64x64, see ``train/make_demo_model.sh``) animates the
shipped reference figure with the shipped speech and hand poses (``echomimic_core/assets/demo``); the
frames are enlarged for viewing (``--display-scale``). The embedded run uses the fast sampler preset (DPM++ 2M at
10 steps, no-overlap windows, deep cache 2: ``settings.FAST_SAMPLER`` + ``FAST_OPTIONS``, the nodes' "fast"
preset), whose held-out quality stays within 10% of the model's exact 20-step DDIM run at half its time (README,
Speed); ``--exact`` runs the exact settings of ``demo.json`` instead. With ``--models DIR`` the same shipped inputs
go through real official weights with the normal preset's defaults (768x768, 30 steps, cfg 2.5).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .generate import DTYPES, add_speed_arguments, execute, run_guarded

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
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--exact", action="store_true",
                        help="embedded model: its exact settings (20 DDIM steps, overlapping windows) instead of the "
                             "fast sampler preset (10 DPM++ 2M steps, no-overlap windows, deep cache 2; same held-out "
                             "quality within 10%%, half the time)")
    add_speed_arguments(parser)


def generate_args(args: argparse.Namespace):
    """The :class:`~echomimic_core.render.RenderJob` of this demo run."""
    from ..render import RenderJob
    from ..settings import FAST_OPTIONS, FAST_SAMPLER
    from .generate import settings_from_args

    embedded = args.models is None
    s = demo_settings() if embedded else {}
    if embedded and not getattr(args, "exact", False):
        s = {**s, **FAST_SAMPLER, **FAST_OPTIONS}
    out = Path(args.out).expanduser().resolve()
    settings = settings_from_args(args, width=s.get("width", 768), height=s.get("height", 768), steps=s.get("steps"),
                                  guidance_scale=s.get("cfg"), seed=s.get("seed"), fps=24.0,
                                  context_frames=int(s.get("context_frames", 12)),
                                  context_overlap=int(s.get("context_overlap", 3)),
                                  scheduler=s.get("scheduler"), context_schedule=s.get("context_schedule"),
                                  deep_cache_interval=s.get("deep_cache_interval", 1))
    return RenderJob(
        models=str(DEMO_MODEL if embedded else args.models),
        image=args.image or str(DEMO_INPUTS / "reference.png"),
        audio=args.audio or str(DEMO_INPUTS / "audio.wav"),
        poses=args.poses or str(DEMO_INPUTS / "poses.npz"),
        out=str(out), settings=settings, max_frames=args.max_frames, pose_policy="loop", device=args.device,
        dtype=args.dtype, threads=args.threads, overwrite=True,  # the demo rewrites its own output file
        display_scale=args.display_scale if args.display_scale is not None else int(s.get("display_scale", 1)))


def run(args: argparse.Namespace) -> int:
    return run_guarded(_run, args)


def _run(args: argparse.Namespace) -> int:
    from ..errors import ModelFilesNotFoundError

    job = generate_args(args)
    if args.models is None and not any((DEMO_MODEL / f"denoising_unet{e}").is_file() for e in (".safetensors", ".pth")):
        raise ModelFilesNotFoundError(f"the embedded demo model is missing from {DEMO_MODEL} (broken install?)")
    t0 = time.perf_counter()
    which = "the embedded tiny demo model" if args.models is None else f"the models in {args.models}"
    st = job.settings
    print(f"demo: {which}, {st.width}x{st.height}, {Path(job.audio).name} + {Path(job.poses).name}", file=sys.stderr)
    result, threads = execute(job, args)
    scale = int(job.display_scale)
    size = f"{st.width * scale}x{st.height * scale}"
    print(f"wrote {job.out}: {result.num_frames} frames at {st.fps:g} fps ({result.num_frames / st.fps:.2f} s), "
          f"{size}, {len(result.timesteps)} steps, cfg {result.guidance_scale:g}, seed {result.seed}, "
          f"{time.perf_counter() - t0:.1f} s ({threads} thread{'s' if threads > 1 else ''})")
    return 0
