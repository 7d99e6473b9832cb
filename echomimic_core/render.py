"""Files in, mp4 out: the one library call behind the ``generate`` and ``demo`` commands (and the benches).

:func:`render_video` loads a model folder, a reference image, speech and a pose sequence, fits the poses to
the speech, runs :meth:`EchoMimicPipeline.generate` with one :class:`GenerationSettings` and streams the frames
into an mp4 with the speech muxed in (written atomically). With a :class:`~echomimic_core.profile.Profiler`
every phase (load, reference, audio, poses, denoise, decode, write) is timed.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import InputError, ModelFilesNotFoundError
from .profile import Profiler, maybe_phase
from .settings import GenerationSettings, video_length
from .video import check_output_path, estimate_mp4_bytes

__all__ = ["RenderJob", "CheckedJob", "check_job", "render_video", "resolve_device"]

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}
POSE_POLICIES = ("trim", "loop", "pingpong", "hold")


@dataclass
class RenderJob:
    """The files and output options of one render (the sampling itself is ``settings``)."""

    models: str
    image: str
    audio: str
    poses: Optional[str]     # None: made from the audio (echomimic_core.gesture, ``gestures`` mode)
    out: str
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    max_frames: Optional[int] = None
    pose_policy: str = "loop"
    device: Optional[str] = None
    dtype: Optional[str] = None
    crf: Optional[int] = None
    display_scale: int = 1
    threads: Optional[int] = None
    gestures: str = "audio"
    reference_pose: Optional[str] = None
    pose_library: list = field(default_factory=list)
    gesture_model: Optional[str] = None
    gesture_seed: int = 0
    motion_amount: float = 1.0
    loras: list = field(default_factory=list)  # "FILE[:STRENGTH]" specs, applied in order (echomimic_core.lora)
    overwrite: bool = False  # replace an existing ``out`` (the CLI's --overwrite)


@dataclass(frozen=True)
class CheckedJob:
    """What :func:`check_job` returns: a private copy of the job (later edits of the caller's job do not
    reach it) and its checked settings. :func:`render_video` runs it without repeating the checks (the
    output write-probe, the audio duration probe); a plain :class:`RenderJob` is checked there first."""

    job: RenderJob
    settings: GenerationSettings


def resolve_device(device: Optional[str], dtype: Optional[str]):
    """``(torch.device, torch.dtype)``: cuda if available, float16 there, float32 on the CPU by default."""
    import torch

    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as exc:
        raise InputError(f"bad --device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device} asked for, but this torch ({torch.__version__}) sees no CUDA GPU (a "
                         "CPU-only build, or no GPU visible); use --device cpu or install a CUDA build of torch")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(f"--device {device}: Apple MPS is not available here; use --device cpu")
    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose one of {', '.join(sorted(DTYPES))}")
    name = DTYPES[dtype] if dtype else ("float16" if dev.type == "cuda" else "float32")
    return dev, getattr(torch, name)


def check_job(job: RenderJob, labels: Optional[dict] = None) -> CheckedJob:
    """Every cheap check of a job, before anything is loaded; returns it checked, with its settings
    (``labels``: see :meth:`GenerationSettings.checked`)."""
    from .inputs import load_reference_image
    from .settings import check_positive

    settings = job.settings.checked(labels=labels)
    if job.max_frames is not None:
        check_positive("--max-frames", job.max_frames)
    if job.pose_policy not in POSE_POLICIES:
        raise InputError(f"unknown pose policy {job.pose_policy!r}; choose one of {', '.join(POSE_POLICIES)}")
    if int(job.display_scale) < 1:
        raise InputError(f"--display-scale must be >= 1 (got {job.display_scale})")
    if job.crf is not None and not 0 <= int(job.crf) <= 51:
        raise InputError(f"--crf must be in [0, 51] (got {job.crf})")
    resolve_device(job.device, job.dtype)
    if not Path(job.models).is_dir():
        raise ModelFilesNotFoundError(f"model folder not found: {job.models}")
    load_reference_image(job.image)  # raises InputError for a missing / non-image file
    if not Path(job.audio).is_file():
        raise InputError(f"audio file not found: {job.audio}")
    if job.poses is not None and not Path(job.poses).exists():
        raise InputError(f"pose sequence not found: {job.poses}")
    out = Path(job.out)
    if out.suffix.lower() != ".mp4":
        raise InputError(f"--out must end in .mp4 (got {out.name})")
    frames = job.max_frames or _audio_frames_estimate(job.audio, settings.fps)
    scale = int(job.display_scale)
    check_output_path(out, overwrite=job.overwrite,  # tried for real: a read-only or full disk fails here
                      min_free_bytes=estimate_mp4_bytes(frames, settings.width * scale, settings.height * scale))
    if job.loras:
        from .lora import check_lora_specs

        check_lora_specs(job.loras)  # file + header only; the base check runs after loading
    return CheckedJob(copy.deepcopy(job), settings)


def _audio_frames_estimate(path: str, fps: float) -> int:
    """Video frames the audio file will give (container duration; 0 when the container does not say)."""
    from .video import probe

    try:
        seconds = probe(path)["duration"] or 0.0
    except Exception:  # unreadable files are reported by the audio decode itself
        return 0
    return int(seconds * fps)


def render_video(job: RenderJob | CheckedJob, *, on_progress: Callable[[Any], Any] | None = None,
                 profiler: Profiler | None = None, cancel: Callable[[], Any] | None = None):
    """Run ``job`` (checked first unless it comes from :func:`check_job`): returns ``(GenerationResult,
    threads used)``; warnings are raised as ``UserWarning``."""
    import torch

    from .audio import encode_waveform, load_audio_encoder, load_waveform
    from .audio.windows import audio_span_samples
    from .checkpoints import find_model_files, load_models
    from .pipeline import EchoMimicPipeline
    from .pose import fit_length, load_pose_sequence
    from .sampling import get_preset
    from .threads import apply_threads, latent_tokens
    from .video import VideoWriter

    checked = job if isinstance(job, CheckedJob) else check_job(job)
    job, settings = checked.job, checked.settings
    variant = get_preset(settings.preset).variant
    find_model_files(job.models, variant).check()  # before anything is loaded
    device, dtype = resolve_device(job.device, job.dtype)
    # one thread for tiny work: the default thread count oversubscribes small networks (see threads.py)
    branches = 2 if settings.guidance_scale > 1 else 1
    threads = apply_threads(job.threads, latent_tokens(settings.width, settings.height,
                                                       settings.context_frames, branches))
    if profiler is not None:
        profiler.start()
    with maybe_phase(profiler, "poses"):
        poses = load_pose_sequence(job.poses) if job.poses is not None else None
        if poses is not None and len(poses) < 1:
            raise InputError(f"the pose sequence {job.poses} has no frames")
    with maybe_phase(profiler, "audio"):
        # decoded once, before any model loads (unreadable, empty or NaN audio fails here), and only as far
        # as --max-frames needs: a half-hour clip behind a short video costs the short video's audio
        span = audio_span_samples(job.max_frames, settings.fps) if job.max_frames is not None else None
        waveform = load_waveform(job.audio, max_samples=span)
    with maybe_phase(profiler, "load"):
        models = load_models(job.models, variant=variant, dtype=dtype, device=device)
        if job.loras:
            from .lora import apply_loras

            apply_loras(models, job.loras)  # checked against this base; patched in place, no reload
    with maybe_phase(profiler, "audio"):
        encoder = load_audio_encoder(models.audio_encoder_path, device=device)
        features = encode_waveform(encoder, waveform, fps=settings.fps, max_frames=job.max_frames)
        del encoder
    num_frames = video_length(job.max_frames, features.num_frames, None)
    with maybe_phase(profiler, "poses"):
        if poses is None:  # image + audio only: echomimic_core.gesture
            from .gesture import poses_from_inputs

            poses = poses_from_inputs(job.image, features, num_frames, job.gestures, waveform=waveform,
                                      reference_pose_file=job.reference_pose, library_paths=job.pose_library,
                                      seed=job.gesture_seed, amount=job.motion_amount, model_dir=job.gesture_model,
                                      fps=settings.fps)
        poses = fit_length(poses, num_frames, job.pose_policy)
    pipe = EchoMimicPipeline.from_models(models)
    scale = int(job.display_scale)
    with VideoWriter(job.out, fps=settings.fps, audio=job.audio, crf=job.crf) as writer:
        def on_frames(frames: torch.Tensor) -> None:  # [n, 3, H, W] float in [0, 1]
            if scale > 1:
                frames = frames.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
            writer.write(frames)

        result = pipe.generate(job.image, features.frames(num_frames), poses, settings.replace(num_frames=num_frames),
                               on_frames=on_frames, on_progress=on_progress, cancel=cancel, profiler=profiler)
        with maybe_phase(profiler, "write"):
            writer.close()
    if profiler is not None:
        profiler.stop()
    return result, threads


def capture_warnings(func, *args, **kwargs):
    """``func(*args, **kwargs)`` with its warnings collected: returns ``(value, [messages])``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = func(*args, **kwargs)
    return value, [str(w.message) for w in caught]
