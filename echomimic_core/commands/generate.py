"""``generate``: reference image + speech + hand poses -> mp4 with the speech muxed in."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

HELP = "animate a reference image with speech audio and a hand-pose sequence into an mp4"

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, metavar="DIR",
                        help="model folder in the official pretrained_weights layout")
    parser.add_argument("--image", required=True, metavar="REF", help="reference image (half-body, hands visible)")
    parser.add_argument("--audio", required=True, metavar="SPEECH", help="speech audio (wav, mp3, ... anything FFmpeg reads)")
    parser.add_argument("--poses", default=None, metavar="POSES",
                        help="pose sequence: official folder of N.npy, or a .npz/.json pose file "
                             "(default: made from the audio, see --gestures)")
    parser.add_argument("--out", required=True, metavar="OUT.mp4", help="output video (written atomically)")
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
    parser.add_argument("--pose-policy", default="loop", choices=("trim", "loop", "pingpong", "hold"),
                        help="how a pose sequence shorter than the audio is lengthened (default loop)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                        help="weight dtype (default: float16 on cuda, float32 on cpu)")
    parser.add_argument("--decode-chunk", type=int, default=1,
                        help="frames per VAE decode call (default 1, like the official code; more is faster on a GPU)")
    parser.add_argument("--crf", type=int, default=None, help="libx264 quality (default: the encoder's, 23)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_gesture_arguments(parser)


def add_gesture_arguments(parser: argparse.ArgumentParser) -> None:
    """Poses without --poses (echomimic_core.gesture)."""
    from ..gesture import MODES

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


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def check_args(args) -> None:
    """Cheap checks of every argument and file, before anything is loaded (``demo`` runs them too, on the
    ``generate`` arguments it builds)."""
    from ..errors import InputError, ModelFilesNotFoundError
    from ..pipeline import check_positive, check_size, load_reference_image
    from ..sampling.context import check_context

    check_size(args.width, args.height)
    if args.steps is not None:
        check_positive("--steps", args.steps)
    if args.max_frames is not None:
        check_positive("--max-frames", args.max_frames)
    if not args.fps > 0:
        raise InputError(f"--fps must be positive (got {args.fps})")
    if args.cfg is not None and not args.cfg >= 0:
        raise InputError(f"--cfg must be >= 0 (got {args.cfg})")
    check_context(args.context_frames, args.context_overlap)
    check_positive("--decode-chunk", args.decode_chunk)
    if not Path(args.models).is_dir():
        raise ModelFilesNotFoundError(f"model folder not found: {args.models}")
    load_reference_image(args.image)  # raises InputError for a missing / non-image file
    if not Path(args.audio).is_file():
        raise InputError(f"audio file not found: {args.audio}")
    if args.poses is not None and not Path(args.poses).exists():
        raise InputError(f"pose sequence not found: {args.poses}")
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise InputError(f"--out must end in .mp4 (got {out.name})")
    if not out.parent.is_dir():
        raise InputError(f"output folder does not exist: {out.parent}")


def _device_and_dtype(args):
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        from ..errors import InputError

        raise InputError(f"bad --device {args.device!r}: {exc}") from None
    name = DTYPES[args.dtype] if args.dtype else ("float16" if device.type == "cuda" else "float32")
    return device, getattr(torch, name)


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


def _run(args: argparse.Namespace) -> int:
    from ..checkpoints import find_model_files
    from ..sampling import get_preset

    check_args(args)
    find_model_files(args.models, get_preset(args.preset).variant).check()  # before anything is loaded
    result = render(args)
    print(f"wrote {args.out}: {result.num_frames} frames at {args.fps:g} fps "
          f"({result.num_frames / args.fps:.2f} s), {len(result.timesteps)} steps, cfg {result.guidance_scale:g}, "
          f"seed {result.seed}")
    return 0


def render(args: argparse.Namespace, display_scale: int = 1):
    """Poses, audio and models named by the ``generate`` arguments -> an mp4 at ``args.out`` (frames
    streamed, written atomically, tqdm progress unless ``args.quiet``). ``display_scale`` enlarges the
    written frames by an integer factor (the 64x64 demo model). Returns the pipeline's GenerationResult;
    shared by ``generate`` and ``demo``."""
    import torch

    from ..audio import encode_audio, load_audio_encoder, load_waveform
    from ..checkpoints import load_models
    from ..errors import InputError
    from ..pipeline import EchoMimicPipeline
    from ..pose import fit_length, load_pose_sequence
    from ..sampling import get_preset
    from ..video import VideoWriter

    device, dtype = _device_and_dtype(args)
    poses = load_pose_sequence(args.poses) if args.poses is not None else None
    if poses is not None and len(poses) < 1:
        raise InputError(f"the pose sequence {args.poses} has no frames")
    waveform = load_waveform(args.audio)  # raises InputError for unreadable/empty audio
    models = load_models(args.models, variant=get_preset(args.preset).variant, dtype=dtype, device=device)
    encoder = load_audio_encoder(models.audio_encoder_path, device=device)
    features = encode_audio(encoder, waveform, fps=args.fps, sample_rate=16000)
    del encoder
    num_frames = features.num_frames if args.max_frames is None else min(features.num_frames, args.max_frames)
    if poses is None:  # image + audio only: echomimic_core.gesture
        from ..gesture import poses_from_inputs

        poses = poses_from_inputs(args.image, features, num_frames, getattr(args, "gestures", "audio"),
                                  waveform=waveform, reference_pose_file=getattr(args, "reference_pose", None),
                                  library_paths=getattr(args, "pose_library", []), seed=getattr(args, "gesture_seed", 0),
                                  amount=getattr(args, "motion_amount", 1.0), model_dir=getattr(args, "gesture_model", None),
                                  fps=args.fps)
    poses = fit_length(poses, num_frames, args.pose_policy)
    pipe = EchoMimicPipeline.from_models(models)

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

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with VideoWriter(args.out, fps=args.fps, audio=args.audio, crf=args.crf) as writer:
                def on_frames(frames: torch.Tensor) -> None:  # [n, 3, H, W] float in [0, 1]
                    if display_scale > 1:
                        frames = frames.repeat_interleave(display_scale, dim=2).repeat_interleave(display_scale, dim=3)
                    writer.write(frames)

                result = pipe.generate(
                    args.image, features.frames(num_frames), poses, width=args.width, height=args.height,
                    num_frames=num_frames, steps=args.steps, guidance_scale=args.cfg, seed=args.seed,
                    context_frames=args.context_frames, context_overlap=args.context_overlap,
                    preset=args.preset, decode_chunk_size=args.decode_chunk, on_frames=on_frames,
                    on_progress=progress)
        finally:
            if bar is not None:
                bar.close()
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return result
