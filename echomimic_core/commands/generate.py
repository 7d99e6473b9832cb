"""``generate``: reference image + speech + hand poses -> mp4 with the speech muxed in."""

from __future__ import annotations

import argparse
import sys

from ..render import DTYPES, POSE_POLICIES

HELP = "animate a reference image with speech audio and a hand-pose sequence into an mp4"

#: GenerationSettings field -> the flag that sets it (error messages name the flag)
FLAG_LABELS = {"steps": "--steps", "guidance_scale": "--cfg", "seed": "--seed", "fps": "--fps",
               "context_frames": "--context-frames", "context_overlap": "--context-overlap",
               "decode_chunk_size": "--decode-chunk", "window_batch_size": "--window-batch",
               "guidance_fraction": "--cfg-fraction", "deep_cache_interval": "--deep-cache"}


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """Speed options shared by ``generate`` and ``demo`` (see README, "Speed")."""
    from ..sampling.scheduler import SCHEDULERS

    g = parser.add_argument_group("speed (exact unless marked)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 for small work such as the 64x64 demo, else the free CPUs; "
                        "env ECHOMIMIC_THREADS)")
    g.add_argument("--window-batch", type=int, default=None, metavar="N",
                   help="context windows per denoiser call (default: auto, from the work size on CPU and the free "
                        "memory on GPU)")
    g.add_argument("--decode-chunk", type=int, default=None, metavar="N",
                   help="frames per VAE decode call (default: auto, bounded by memory; the official code uses 1)")
    g.add_argument("--pose-feature-cache-mb", type=float, default=None, metavar="MB",
                   help="pose features are encoded once per frame up to this budget, the rest per window "
                        "(default: 64 on CPU, 10%% of free GPU memory)")
    g.add_argument("--plain", action="store_true",
                   help="turn the exact speed-ups off (one window per call, no pose-feature / reference key-value "
                        "caches, uncond audio attention computed, per-frame heads once per window): the official "
                        "computation order, for comparison")
    g.add_argument("--compile", action="store_true", help="torch.compile the denoiser (falls back to eager on failure)")
    g.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None,
                   help="sampler (default ddim = official); the others are built from the same noise schedule and "
                        "change the output (fast with fewer --steps)")
    g.add_argument("--context-schedule", choices=("uniform", "no_overlap"), default=None,
                   help="uniform (default, official) or no_overlap: windows without overlap (changes the output; "
                        "fewer windows)")
    g.add_argument("--cfg-fraction", type=float, default=None, metavar="F",
                   help="classifier-free guidance only on the first ceil(F x steps) steps, the rest conditional only "
                        "(changes the output; default 1 = every step)")
    g.add_argument("--deep-cache", type=int, default=None, metavar="N",
                   help="DeepCache: the full UNet every N steps, the steps between reuse its deep features "
                        "(changes the output; memory grows with the video length; default 1 = off)")
    g.add_argument("--fast", action="store_true",
                   help="the measured fast options together (changes the output; demo quality within 10%% of the "
                        "exact run): --context-schedule no_overlap --deep-cache 2")
    g.add_argument("--profile", action="store_true",
                   help="print the wall time of every phase (load, reference, audio, poses, denoise, decode, write), "
                        "the total and the peak RSS to stderr")
    g.add_argument("--profile-json", default=None, metavar="PATH",
                   help='write {"phases": {name: s}, "total": s, "peak_rss_mb": x, "frames": n} to PATH')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, metavar="DIR",
                        help="model folder in the official pretrained_weights layout")
    parser.add_argument("--image", required=True, metavar="REF", help="reference image (half-body, hands visible)")
    parser.add_argument("--audio", required=True, metavar="SPEECH", help="speech audio (wav, mp3, ... anything FFmpeg reads)")
    parser.add_argument("--poses", default=None, metavar="POSES",
                        help="pose sequence: official folder of N.npy, or a .npz/.json pose file "
                             "(default: made from the audio, see --gestures)")
    parser.add_argument("--out", required=True, metavar="OUT.mp4", help="output video (written atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.mp4 if it exists (default: refuse)")
    parser.add_argument("--preset", choices=("normal", "acc"), default="normal",
                        help="normal: 30 steps, cfg 2.5, seed 3407; acc: accelerated weights, 6 steps, cfg 1.0, seed 420")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: from the preset)")
    parser.add_argument("--cfg", type=float, default=None, help="guidance scale; <= 1 runs no unconditional pass")
    parser.add_argument("--seed", type=int, default=None, help="initial noise seed (default: from the preset)")
    parser.add_argument("--width", type=int, default=768, help="output width, a multiple of 8 (default 768)")
    parser.add_argument("--height", type=int, default=768, help="output height, a multiple of 8 (default 768)")
    parser.add_argument("--fps", type=float, default=24.0, help="video frame rate (default 24, as trained)")
    parser.add_argument("--context-frames", type=int, default=12, help="frames per denoising window (default 12)")
    parser.add_argument("--context-overlap", type=int, default=3, help="frames shared by neighbouring windows (default 3)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="cap on the number of frames (default: as long as the audio)")
    parser.add_argument("--pose-policy", default="loop", choices=POSE_POLICIES,
                        help="how a pose sequence shorter than the audio is lengthened (default loop)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                        help="weight dtype (default: float16 on cuda, float32 on cpu)")
    parser.add_argument("--crf", type=int, default=None, help="libx264 quality (default: the encoder's, 23)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_speed_arguments(parser)
    add_gesture_arguments(parser)
    parser.add_argument("--lora", action="append", default=[], metavar="FILE[:STRENGTH]",
                        help="apply an EchoMimicV2 LoRA (.safetensors) at STRENGTH (default 1); repeatable, stacked")


def add_gesture_arguments(parser: argparse.ArgumentParser) -> None:
    """Poses without --poses (echomimic_core.gesture)."""
    from ..gesture.constants import MODES

    g = parser.add_argument_group("poses without --poses")
    g.add_argument("--gestures", choices=MODES, default="audio",
                   help="audio: generated from the speech by the gesture model (default); library: clips of "
                        "--pose-library cut at speech pauses; still: the reference's own hands held")
    g.add_argument("--reference-pose", default=None, metavar="FILE",
                   help="the reference person's pose (frame 0 of this pose file; default: detected in --image)")
    g.add_argument("--pose-library", nargs="+", default=[], metavar="PATH", help="pose files/folders for --gestures library")
    g.add_argument("--gesture-model", default=None, metavar="DIR", help="gesture model folder (default: the embedded one)")
    g.add_argument("--gesture-seed", type=int, default=0, help="seed of the generated gestures (default 0)")
    g.add_argument("--motion-amount", type=float, default=1.0, help="gesture size around the reference pose (0 = still)")


def settings_from_args(args: argparse.Namespace, **defaults):
    """The :class:`GenerationSettings` named by ``generate``/``demo`` arguments (``defaults`` fill unset ones)."""
    from ..settings import GenerationSettings

    def pick(name, field=None):
        value = getattr(args, name, None)
        return value if value is not None else defaults.get(field or name)

    plain = bool(getattr(args, "plain", False))
    from ..settings import FAST_OPTIONS

    fast = FAST_OPTIONS if getattr(args, "fast", False) else {}
    schedule = fast.get("context_schedule") or pick("context_schedule") or "uniform"
    deep = getattr(args, "deep_cache", None)
    if deep is None:
        deep = fast.get("deep_cache_interval") or defaults.get("deep_cache_interval", 1)
    return GenerationSettings(
        width=pick("width"), height=pick("height"), steps=pick("steps"), guidance_scale=pick("cfg", "guidance_scale"),
        seed=pick("seed"), preset=getattr(args, "preset", None), scheduler=pick("scheduler") or "ddim",
        context_frames=pick("context_frames"), context_overlap=pick("context_overlap"), context_schedule=schedule,
        fps=24.0 if pick("fps") is None else pick("fps"), decode_chunk_size=getattr(args, "decode_chunk", None),
        window_batch_size=1 if plain else getattr(args, "window_batch", None),
        pose_feature_cache_mb=0.0 if plain else getattr(args, "pose_feature_cache_mb", None),
        cache_reference_kv=not plain, skip_uncond_audio=not plain, share_frame_heads=not plain,
        compile=bool(getattr(args, "compile", False)),
        guidance_fraction=1.0 if getattr(args, "cfg_fraction", None) is None else args.cfg_fraction,
        deep_cache_interval=deep)


def job_from_args(args: argparse.Namespace):
    from ..render import RenderJob

    return RenderJob(models=args.models, image=args.image, audio=args.audio, poses=args.poses, out=args.out,
                     settings=settings_from_args(args), max_frames=args.max_frames, pose_policy=args.pose_policy,
                     device=args.device, dtype=args.dtype, crf=args.crf, threads=args.threads,
                     gestures=args.gestures, reference_pose=args.reference_pose, pose_library=list(args.pose_library),
                     gesture_model=args.gesture_model, gesture_seed=args.gesture_seed, motion_amount=args.motion_amount,
                     loras=list(getattr(args, "lora", []) or []), overwrite=bool(getattr(args, "overwrite", False)))


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    return run_guarded(_run, args)


def run_guarded(func, args: argparse.Namespace) -> int:
    """``func(args)`` with the CLI's exit codes: 130 and no output on interruption, 2 and a one-line
    ``error:`` for the library's own errors (shared by ``generate`` and ``demo``)."""
    from ..errors import EchoMimicError, Interrupted

    try:
        return func(args)
    except Interrupted as exc:
        print(f"interrupted: {exc}; no output written", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; no output written", file=sys.stderr)
        return 130
    except EchoMimicError as exc:
        return _fail(str(exc))


def execute(job, args: argparse.Namespace):
    """Run a :class:`RenderJob` with the CLI's progress bar, warnings and ``--profile`` output (shared by
    ``generate`` and ``demo``); returns ``(result, threads)``."""
    from ..profile import Profiler
    from ..render import capture_warnings, check_job, render_video, resolve_device

    checked = check_job(job, labels=FLAG_LABELS)  # before anything is loaded; messages name the flags
    if getattr(args, "owns_process", False):
        from .process import freeze_after_imports

        freeze_after_imports()
    profiler = Profiler(resolve_device(job.device, job.dtype)[0]) if (args.profile or args.profile_json) else None
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=None, unit="win", desc="denoise", dynamic_ncols=True)

    def progress(p):
        if bar is not None:
            bar.total = p.total
            # refresh=False and update(): tqdm redraws at most every mininterval, not twice per window
            bar.set_description(p.phase if p.phase == "decode" else f"step {p.step + 1}/{p.num_steps}",
                                refresh=False)
            bar.update(p.done - bar.n)

    try:
        (result, threads), notes = capture_warnings(render_video, checked, on_progress=progress, profiler=profiler)
    finally:
        if bar is not None:
            bar.close()
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if profiler is not None:
        print(f"threads {threads}, window batch {result.settings.window_batch_size}, decode chunk "
              f"{result.settings.decode_chunk_size}, scheduler {result.settings.scheduler}", file=sys.stderr)
        profiler.report(args.profile_json, table=bool(args.profile))
    return result, threads


def _run(args: argparse.Namespace) -> int:
    result, _ = execute(job_from_args(args), args)
    fps = result.settings.fps
    print(f"wrote {args.out}: {result.num_frames} frames at {fps:g} fps "
          f"({result.num_frames / fps:.2f} s), {len(result.timesteps)} steps, cfg {result.guidance_scale:g}, "
          f"seed {result.seed}")
    return 0
