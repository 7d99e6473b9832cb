"""The EchoMimicV2 sampler: reference image + per-frame audio features + hand poses -> video frames.

Official behaviour reproduced (``pipeline_echomimicv2.py`` / ``_acc.py``, see SAMPLING.md):

* reference image -> VaeImageProcessor-equivalent preprocessing -> VAE posterior **mean** x 0.18215 ->
  ReferenceNet once at t=0 -> reference bank (rounded to fp16, reused by every window and step);
* initial noise from a CPU generator seeded with ``seed``, drawn in the weight dtype, clamped to ±1.5;
* DDIM (v-prediction, zero terminal SNR, trailing spacing), context windows of ``context_frames`` with
  ``context_overlap``, closed loop with wrap-around, shifted by 3·i at step i, overlapping predictions
  averaged; CFG batch ``[uncond, cond]`` with zero audio, zero pose features and no reference for uncond;
* guidance ≤ 1 follows the accelerated pipeline: one branch, bank without CFG duplication, averaged
  windows (the plain official pipeline crashes there; its "patched" record sums windows - not copied);
* decode ``latents / 0.18215`` a few frames at a time, ``(x/2 + 0.5).clamp(0, 1)``.

Memory is flat in the video length: pose images are drawn and pose features encoded per window (the
PoseEncoder works frame by frame), and decoded frames are handed to ``on_frames`` chunk by chunk instead
of being collected. Only the latents (4 channels at 1/8 resolution) and the audio features exist for
the whole video.

Public API::

    pipe = EchoMimicPipeline.from_folder("pretrained_weights", variant="normal", device="cuda",
                                         dtype=torch.float16)
    result = pipe.generate(reference_image, audio_features, poses, width=768, height=768,
                           steps=30, guidance_scale=2.5, seed=3407, on_frames=writer.write)
"""

from __future__ import annotations

import functools
import math
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .errors import InputError, Interrupted
from .sampling import (PRESETS, WindowAccumulator, apply_guidance, get_preset, initial_latents,
                       make_scheduler, shifted_windows, uniform_windows, uses_cfg)
from .sampling.context import check_context

#: VAE latent scale, hard-coded in the official pipelines (not read from the VAE config)
LATENT_SCALE = 0.18215


# ----------------------------------------------------------------------------------------------------
# small value types
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """One progress report. ``done``/``total`` count units of work over the whole run (every window of
    every step, then every decoded chunk) so a single bar can show it."""

    phase: str          # "denoise" or "decode"
    step: int           # 0-based denoising step (steps when decoding)
    num_steps: int
    window: int         # 0-based window within the step, or decoded frames so far
    num_windows: int    # windows per step, or frames to decode
    done: int
    total: int
    timestep: int | None = None


@dataclass
class GenerationResult:
    """What :meth:`EchoMimicPipeline.generate` returns.

    ``latents`` [1, 4, F, h, w] are the final latents (before ``1/0.18215``), float32 on CPU.
    ``frames`` is ``None`` when the frames were streamed to ``on_frames`` (or ``decode=False``); otherwise a
    float32 CPU tensor [F, 3, H, W] in [0, 1]. ``unet_calls`` lists the batch size of every denoiser call.
    """

    latents: torch.Tensor
    frames: Optional[torch.Tensor]
    num_frames: int
    timesteps: list[int]
    windows_per_step: list[list[list[int]]]
    guidance_scale: float
    seed: int
    width: int
    height: int
    unet_calls: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------
# input normalisation (cheap, done before any heavy work)
# ----------------------------------------------------------------------------------------------------
def check_size(width: int, height: int) -> tuple[int, int]:
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        raise InputError(f"width/height must be integers (got {width!r}, {height!r})") from None
    if w <= 0 or h <= 0 or w % 8 or h % 8:
        raise InputError(f"width and height must be positive multiples of 8 (got {w}x{h})")
    return w, h


def check_positive(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive integer (got {value!r})") from None
    if number != value and not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be a whole number (got {value!r})")
    if number <= 0:
        raise InputError(f"{name} must be a positive integer (got {value})")
    return number


def _to_pil(image: Any):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if hasattr(image, "detach"):
        image = image.detach().cpu()
        if image.ndim == 4:
            if image.shape[0] != 1:
                raise InputError(f"reference image batch must hold one image (got {image.shape[0]})")
            image = image[0]
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
            image = image.permute(1, 2, 0)
        if image.dtype.is_floating_point:  # ComfyUI IMAGE convention: [0, 1]
            image = (image.float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        image = image.numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputError(f"reference image must be [H, W, 3] (got shape {tuple(array.shape)})")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            array = (np.clip(array, 0, 1) * 255.0).round().astype(np.uint8)
        else:
            raise InputError(f"reference image must be uint8 or float in [0, 1] (got {array.dtype})")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(array))


def load_reference_image(source: Any):
    """A PIL RGB image from a path, a PIL image, a uint8/float array or a tensor."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, str) or hasattr(source, "__fspath__"):
        try:
            with Image.open(source) as img:
                img.load()
                return img.convert("RGB")
        except FileNotFoundError:
            raise InputError(f"reference image not found: {source}") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(f"{source} is not a readable image: {exc}") from None
    return _to_pil(source).convert("RGB")


def fit_reference_image(image: Any, width: int, height: int) -> tuple[Any, list[str]]:
    """Centre-crop to the target aspect ratio (if it differs) and return the image plus warnings.

    Resizing to exactly (width, height) is left to :func:`preprocess_reference` (LANCZOS, as diffusers'
    VaeImageProcessor does in the official pipeline), so an image that already has the right size passes
    through bit-exactly.
    """
    img = load_reference_image(image)
    notes: list[str] = []
    w0, h0 = img.size
    if w0 * height != h0 * width:
        target = width / height
        if w0 / h0 > target:
            new_w = max(1, round(h0 * target))
            left = (w0 - new_w) // 2
            box = (left, 0, left + new_w, h0)
        else:
            new_h = max(1, round(w0 / target))
            top = (h0 - new_h) // 2
            box = (0, top, w0, top + new_h)
        img = img.crop(box)
        notes.append(f"reference image {w0}x{h0} has a different aspect ratio than {width}x{height}; "
                     f"centre-cropped to {img.size[0]}x{img.size[1]}")
    if img.size != (width, height):
        notes.append(f"reference image resized from {img.size[0]}x{img.size[1]} to {width}x{height}")
    return img, notes


def preprocess_reference(image: Any, width: int, height: int) -> torch.Tensor:
    """VaeImageProcessor(do_convert_rgb=True).preprocess equivalent: RGB, LANCZOS resize to (W, H) when the
    size differs, [0, 1] -> [-1, 1], ``[1, 3, H, W]`` float32."""
    from PIL import Image

    img = load_reference_image(image)
    if img.size != (width, height):
        img = img.resize((width, height), resample=Image.LANCZOS)
    array = np.asarray(img, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()
    return tensor * 2.0 - 1.0


def normalize_audio_features(features: Any) -> torch.Tensor:
    """Per-frame audio chunks as ``[num_chunks, tokens, channels]`` float tensor (CPU)."""
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor):
        raise InputError(f"audio features must be a tensor [frames, tokens, channels] (got {type(features).__name__})")
    if features.ndim == 4 and features.shape[0] == 1:
        features = features[0]
    if features.ndim != 3 or features.shape[0] < 1 or features.shape[1] < 1:
        raise InputError(f"audio features must be [frames, tokens, channels] (got shape {tuple(features.shape)})")
    if not features.dtype.is_floating_point:
        raise InputError(f"audio features must be floating point (got {features.dtype})")
    return features.detach()


class PoseSource:
    """Pose images for any frame subset, drawn on demand.

    Built from (a) a pose-image tensor: float ``[1, 3, F, H, W]`` / ``[3, F, H, W]`` in [0, 1] (the official
    ``poses_tensor``) or uint8 ``[F, H, W, 3]``; (b) a pose sequence (``echomimic_core.pose.PoseSequence``,
    drawn with ``render_frames`` per window); or (c) a callable ``fn(indices, height, width) -> uint8
    [n, H, W, 3]``. ``images(indices)`` returns float ``[1, 3, n, H, W]`` in [0, 1].
    """

    def __init__(self, poses: Any, width: int, height: int, length: int | None = None,
                 cache_bytes: int = 0) -> None:
        self.width, self.height = width, height
        # drawn frames are kept compressed (bounding box of the non-black pixels, zlib) up to a fixed budget,
        # so that later steps do not redraw them; the budget, not the video length, bounds the memory
        self.cache_bytes = max(0, int(cache_bytes))
        self._cache: dict[int, tuple] = {}
        self._cache_used = 0
        self._tensor: torch.Tensor | None = None
        self._uint8_hwc = False
        self._draw: Callable[[list[int]], np.ndarray] | None = None
        if isinstance(poses, np.ndarray):
            poses = torch.from_numpy(poses)
        if isinstance(poses, torch.Tensor):
            t = poses.detach()
            if t.dtype == torch.uint8 and t.ndim == 4 and t.shape[-1] == 3:
                self._uint8_hwc = True
                frames, h, w = t.shape[0], t.shape[1], t.shape[2]
            else:
                if t.ndim == 4:
                    t = t[None]
                if t.ndim != 5 or t.shape[0] != 1 or t.shape[1] != 3:
                    raise InputError("pose images must be [1, 3, F, H, W] (float in [0, 1]) or [F, H, W, 3] "
                                     f"(uint8); got shape {tuple(poses.shape)}")
                if t.dtype == torch.uint8:
                    t = t.float() / 255.0
                frames, h, w = t.shape[2], t.shape[3], t.shape[4]
            if (h, w) != (height, width):
                raise InputError(f"pose images are {w}x{h} but the video is {width}x{height}")
            self._tensor = t
            self.length = int(frames)
        elif callable(poses) and not hasattr(poses, "frames"):
            if length is None:
                raise InputError("a pose drawing callable needs the sequence length")
            self._draw = lambda idx: poses(idx, height, width)
            self.length = int(length)
        elif hasattr(poses, "frames") and hasattr(poses, "__len__"):
            from .pose import render_frames

            seq = poses
            self._draw = lambda idx: render_frames(seq, idx, height, width)
            self.length = len(seq)
        else:
            raise InputError(f"unsupported pose input {type(poses).__name__}: pass pose images or a PoseSequence")
        if self.length < 1:
            raise InputError("the pose sequence is empty")

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        idx = [int(i) for i in indices]
        if self._tensor is not None:
            if self._uint8_hwc:
                sel = self._tensor[idx].permute(3, 0, 1, 2)[None].float() / 255.0
            else:
                sel = self._tensor[:, :, idx].float()
            return sel.contiguous()
        drawn = self._drawn(idx)
        return torch.from_numpy(drawn.astype(np.float32) / 255.0).permute(3, 0, 1, 2)[None].contiguous()

    def _drawn(self, idx: list[int]) -> np.ndarray:
        """uint8 ``[n, H, W, 3]`` drawings of frames ``idx`` (cached ones decompressed, others drawn)."""
        out = np.zeros((len(idx), self.height, self.width, 3), dtype=np.uint8)
        missing = [i for i in dict.fromkeys(idx) if i not in self._cache]
        fresh: dict[int, np.ndarray] = {}
        if missing:
            drawn = np.asarray(self._draw(missing))
            if drawn.shape != (len(missing), self.height, self.width, 3):
                raise InputError(f"pose drawing returned shape {drawn.shape}, expected "
                                 f"{(len(missing), self.height, self.width, 3)}")
            drawn = drawn.astype(np.uint8, copy=False)
            for k, i in enumerate(missing):
                fresh[i] = drawn[k]
                self._remember(i, drawn[k])
        for k, i in enumerate(idx):
            if i in fresh:
                out[k] = fresh[i]
            else:
                y0, y1, x0, x1, blob = self._cache[i]
                if blob is not None:
                    out[k, y0:y1, x0:x1] = np.frombuffer(zlib.decompress(blob), np.uint8).reshape(y1 - y0, x1 - x0, 3)
        return out

    def _remember(self, index: int, image: np.ndarray) -> None:
        if self._cache_used >= self.cache_bytes:
            return
        rows = np.flatnonzero(image.any(axis=(1, 2)))
        if rows.size == 0:
            entry = (0, 0, 0, 0, None)
            size = 64
        else:
            cols = np.flatnonzero(image.any(axis=(0, 2)))
            y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            blob = zlib.compress(np.ascontiguousarray(image[y0:y1, x0:x1]).tobytes(), 1)
            entry = (y0, y1, x0, x1, blob)
            size = len(blob) + 64
        if self._cache_used + size <= self.cache_bytes:
            self._cache[index] = entry
            self._cache_used += size


# ----------------------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------------------
class EchoMimicPipeline:
    """Sampler over the four EchoMimicV2 networks.

    ``vae`` (diffusers AutoencoderKL), ``reference_unet``, ``denoising_unet``, ``pose_encoder`` as built by
    :func:`echomimic_core.checkpoints.load_models`; ``scheduler_kwargs`` from the folder's inference config.
    The networks stay where they are (device/dtype); the pipeline follows the denoiser's device and dtype.
    ``bank_dtype`` is the dtype the reference bank is rounded to (official: float16, even in fp32 runs).
    """

    def __init__(self, vae, reference_unet, denoising_unet, pose_encoder, scheduler_kwargs=None, *,
                 variant: str = "normal", bank_dtype: torch.dtype | None = torch.float16,
                 reference_pairing: dict[str, str] | None = None) -> None:
        self.vae = vae
        self.reference_unet = reference_unet
        self.denoising_unet = denoising_unet
        self.pose_encoder = pose_encoder
        self.scheduler_kwargs = dict(scheduler_kwargs or {})
        self.variant = variant
        self.bank_dtype = bank_dtype
        # writer path -> reader path; None = same module path (the official networks)
        self.reference_pairing = reference_pairing
        make_scheduler(self.scheduler_kwargs)  # validate now

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_models(cls, models, **kwargs) -> "EchoMimicPipeline":
        """From the ``EchoMimicModels`` bundle returned by ``checkpoints.load_models``."""
        return cls(models.vae, models.reference_unet, models.denoising_unet, models.pose_encoder,
                   models.scheduler_kwargs, variant=models.variant, reference_pairing=models.reference_pairing,
                   **kwargs)

    @classmethod
    def from_folder(cls, folder, variant: str = "normal", device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32, **kwargs) -> "EchoMimicPipeline":
        from .checkpoints import load_models

        return cls.from_models(load_models(folder, variant=variant, dtype=dtype, device=device), **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.denoising_unet.parameters()).device

    @property
    def vae_scale_factor(self) -> int:
        """2^(levels-1) of the VAE (8 for sd-vae-ft-mse), as diffusers pipelines compute it."""
        levels = getattr(getattr(self.vae, "config", None), "block_out_channels", None)
        return 2 ** (len(levels) - 1) if levels else 8

    @property
    def dtype(self) -> torch.dtype:
        return next(self.denoising_unet.parameters()).dtype

    def _module_dtype(self, module) -> torch.dtype:
        try:
            return next(module.parameters()).dtype
        except (StopIteration, AttributeError):
            return self.dtype

    def _module_device(self, module) -> torch.device:
        try:
            return next(module.parameters()).device
        except (StopIteration, AttributeError):
            return self.device

    # -- building blocks (public so that nodes/tests can use them one by one) --------------------
    @torch.no_grad()
    def encode_reference(self, image: Any, width: int, height: int) -> torch.Tensor:
        """Reference latents ``[1, 4, H/8, W/8]`` of an image (see :func:`preprocess_reference`)."""
        return self.encode_reference_pixels(preprocess_reference(image, width, height))

    @torch.no_grad()
    def encode_reference_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """VAE posterior mean x 0.18215 of preprocessed pixels ``[1, 3, H, W]`` in [-1, 1]."""
        pixels = pixels.to(self._module_device(self.vae), self._module_dtype(self.vae))
        return self.vae.encode(pixels).latent_dist.mean * LATENT_SCALE

    @torch.no_grad()
    def encode_poses(self, images: torch.Tensor) -> torch.Tensor:
        """PoseEncoder over pose images ``[1, 3, n, H, W]`` in [0, 1] -> ``[1, C0, n, H/8, W/8]``."""
        return self.pose_encoder(images.to(self._module_device(self.pose_encoder),
                                           self._module_dtype(self.pose_encoder)))

    @torch.no_grad()
    def reference_bank(self, ref_latents: torch.Tensor):
        """Run the ReferenceNet once (t = 0) and return its bank keyed by the denoiser's block paths.
        The official fp16 rounding of the bank (quirk 4) happens in the denoiser's reference read
        (``reference_dtype=bank_dtype``)."""
        unet = self.reference_unet
        device, dtype = self._module_device(unet), self._module_dtype(unet)
        timestep = torch.zeros((), dtype=torch.long, device=device)
        bank = unet(ref_latents.to(device, dtype), timestep).reference_bank
        if self.reference_pairing and any(k != v for k, v in self.reference_pairing.items()):
            bank = bank.remap(self.reference_pairing)
        return bank

    @torch.no_grad()
    def denoise(self, sample, timestep, audio, pose_features, bank, reference_mask) -> torch.Tensor:
        """One denoiser forward on a window batch ``[b, C, f, h, w]`` -> v-prediction of the same shape.

        ``audio`` [b, f, tokens, C], ``pose_features`` [b, C0, f, h, w], ``reference_mask`` [b] bool (which
        batch elements read the reference bank; the CFG unconditional half does not)."""
        mask = torch.as_tensor(list(reference_mask), dtype=torch.bool, device=sample.device)
        return self.denoising_unet(sample, timestep, audio=audio, pose_features=pose_features, reference_bank=bank,
                                   reference_mask=mask, reference_dtype=self.bank_dtype).sample

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 1):
        """Yield ``(start, frames)`` with frames float32 CPU ``[n, 3, H, W]`` in [0, 1], ``chunk_size``
        frames at a time (the official pipeline decodes one frame at a time)."""
        vae_device, vae_dtype = self._module_device(self.vae), self._module_dtype(self.vae)
        frames = latents.shape[2]
        for start in range(0, frames, chunk_size):
            z = latents[0, :, start:start + chunk_size].permute(1, 0, 2, 3)
            z = (z.to(vae_device, vae_dtype) / LATENT_SCALE)
            image = self.vae.decode(z).sample
            yield start, (image / 2 + 0.5).clamp(0, 1).float().cpu()

    # -- the whole run ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, reference_image: Any, audio_features: Any, poses: Any, *,
                 width: int = 768, height: int = 768, num_frames: int | None = None,
                 steps: int | None = None, guidance_scale: float | None = None, seed: int | None = None,
                 context_frames: int = 12, context_overlap: int = 3, preset: str | None = None,
                 decode: bool = True, decode_chunk_size: int = 1, pose_cache_mb: float = 64.0,
                 on_frames: Callable[[torch.Tensor], Any] | None = None,
                 on_progress: Callable[[Progress], Any] | None = None,
                 cancel: Callable[[], Any] | None = None,
                 latents: torch.Tensor | None = None,
                 on_step: Callable[[int, int, torch.Tensor, torch.Tensor], Any] | None = None,
                 teacher_latents: Sequence[torch.Tensor] | None = None,
                 ) -> GenerationResult:
        """Generate a video.

        * ``reference_image``: path, PIL image, uint8 ``[H,W,3]`` or float tensor in [0, 1]; centre-cropped to
          the target aspect and resized (with a warning) when it differs.
        * ``audio_features``: ``[chunks, tokens, 384]`` per-frame whisper chunks (``audio.encode_audio``).
        * ``poses``: see :class:`PoseSource`; must cover ``num_frames`` (fit the length beforehand).
        * ``num_frames``: default = all audio chunks and poses; always clipped to the audio chunk count.
        * ``steps`` / ``guidance_scale`` / ``seed``: default from ``preset`` (default: this pipeline's variant).
        * ``on_frames(frames)``: receives decoded float32 ``[n, 3, H, W]`` chunks in order; when given,
          frames are not collected (flat memory). ``on_progress(Progress)`` after every window and chunk.
        * ``pose_cache_mb``: drawn pose images (from a pose sequence) are kept zlib-compressed, cropped to their
          non-black box, up to this budget so later steps do not redraw them (0 = redraw every time).
        * ``cancel()``: checked before every window and decode chunk; returning True raises
          :class:`~echomimic_core.errors.Interrupted` (a cancel function may also raise its own exception).
        * ``latents``: optional initial latents (instead of seeded noise); ``on_step(i, t, noise_pred,
          latents_out)`` observes each scheduler step; ``teacher_latents[i]`` replaces the input latents of
          step i (teacher forcing, used by the parity tests).
        """
        # ---- validation: everything cheap first --------------------------------------------------
        width, height = check_size(width, height)
        if width % self.vae_scale_factor or height % self.vae_scale_factor:
            raise InputError(f"width and height must be multiples of the VAE scale factor {self.vae_scale_factor} "
                             f"(got {width}x{height})")
        chosen = get_preset(preset) if preset is not None else PRESETS.get(self.variant, PRESETS["normal"])
        steps = check_positive("steps", chosen.steps if steps is None else steps)
        guidance_scale = float(chosen.guidance_scale if guidance_scale is None else guidance_scale)
        if not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise InputError(f"guidance scale must be a finite number >= 0 (got {guidance_scale})")
        seed = int(chosen.seed if seed is None else seed)
        check_context(context_frames, context_overlap)
        decode_chunk_size = check_positive("decode chunk size", decode_chunk_size)
        audio = normalize_audio_features(audio_features)
        pose_source = PoseSource(poses, width, height, cache_bytes=int(max(0.0, float(pose_cache_mb)) * 2**20))
        available = min(audio.shape[0], pose_source.length)
        if num_frames is None:
            num_frames = available
        num_frames = check_positive("number of frames", num_frames)
        video_length = min(num_frames, audio.shape[0])  # official: clipped to the audio chunk count
        if pose_source.length < video_length:
            raise InputError(f"the pose sequence has {pose_source.length} frames but {video_length} are needed; "
                             "fit its length first (pose.fit_length)")
        motion_max = _motion_max_frames(self.denoising_unet)
        if motion_max is not None and min(context_frames, video_length) > motion_max:
            raise InputError(f"context frames {context_frames} exceed the motion module's position table "
                             f"({motion_max} frames)")
        img, notes = fit_reference_image(reference_image, width, height)
        for note in notes:
            warnings.warn(note, stacklevel=2)
        _check_cancel(cancel)

        # ---- setup ------------------------------------------------------------------------------
        device, dtype = self.device, self.dtype
        do_cfg = uses_cfg(guidance_scale)
        scheduler = make_scheduler(self.scheduler_kwargs)
        scheduler.set_timesteps(steps, device="cpu")
        timesteps = [int(t) for t in scheduler.timesteps]
        factor = self.vae_scale_factor
        h8, w8 = height // factor, width // factor
        channels = getattr(getattr(self.denoising_unet, "config", None), "in_channels", None) \
            or getattr(self.denoising_unet, "in_channels", 4)
        shape = (1, int(channels), video_length, h8, w8)
        if latents is None:
            latents = initial_latents(shape, seed, dtype=dtype, device="cpu",
                                      init_noise_sigma=float(scheduler.init_noise_sigma))
        elif tuple(latents.shape) != shape:
            raise InputError(f"initial latents must have shape {shape} (got {tuple(latents.shape)})")
        latents = latents.detach().float().to(device)  # small; kept (and stepped) in float32 for the whole video

        base_windows = uniform_windows(video_length, context_frames, context_overlap)
        schedule = [shifted_windows(base_windows, i, video_length) for i in range(steps)]
        num_chunks = math.ceil(video_length / decode_chunk_size) if decode else 0
        total = steps * len(base_windows) + num_chunks
        done = 0
        result = GenerationResult(latents=latents, frames=None, num_frames=video_length, timesteps=timesteps,
                                  windows_per_step=schedule, guidance_scale=guidance_scale, seed=seed,
                                  width=width, height=height, warnings=list(notes))

        # ---- reference pass (once) --------------------------------------------------------------
        ref_latents = self.encode_reference_pixels(preprocess_reference(img, width, height))
        bank = self.reference_bank(ref_latents)
        del ref_latents
        audio_dev = audio[:video_length].to(device, dtype)  # small: [F, tokens, C]
        reference_mask = [False, True] if do_cfg else [True]
        trim_cpu_heap = device.type == "cpu"

        # ---- denoising loop -------------------------------------------------------------------------
        try:
            for i, t in enumerate(timesteps):
                if teacher_latents is not None:
                    latents = teacher_latents[i].detach().float().to(device).clone()
                acc = WindowAccumulator(2 if do_cfg else 1, shape, device=device, dtype=torch.float32)
                t_tensor = torch.tensor(t, dtype=torch.long, device=device)
                for j, window in enumerate(schedule[i]):
                    _check_cancel(cancel)
                    x = latents[:, :, window].to(device, dtype)
                    a = audio_dev[window][None]                                 # [1, n, tokens, C]
                    p = self.encode_poses(pose_source.images(window)).to(device, dtype)
                    if do_cfg:
                        x = torch.cat([x, x])
                        a = torch.cat([torch.zeros_like(a), a])
                        p = torch.cat([torch.zeros_like(p), p])
                    pred = self.denoise(x, t_tensor, a, p, bank, reference_mask)
                    result.unet_calls.append(int(x.shape[0]))
                    acc.add(window, pred.float())
                    del x, a, p, pred
                    if trim_cpu_heap:
                        _trim_heap()
                    done += 1
                    if on_progress is not None:
                        on_progress(Progress("denoise", i, steps, j, len(schedule[i]), done, total, t))
                noise_pred = apply_guidance(acc.mean_(), guidance_scale, inplace=True)
                del acc
                latents = _ddim_step(scheduler, noise_pred, t, latents)
                if on_step is not None:
                    on_step(i, t, noise_pred, latents)
        finally:
            del bank
        result.latents = latents.cpu()
        if not decode:
            return result

        # ---- decode, streamed -------------------------------------------------------------------------
        collected: list[torch.Tensor] | None = [] if on_frames is None else None
        decoded = 0
        for start, frames in self.decode_latents(latents, decode_chunk_size):
            _check_cancel(cancel)
            if on_frames is not None:
                on_frames(frames)
            else:
                collected.append(frames)
            decoded += frames.shape[0]
            del frames
            if trim_cpu_heap:
                _trim_heap()
            done += 1
            if on_progress is not None:
                on_progress(Progress("decode", steps, steps, decoded, video_length, done, total))
        if collected is not None:
            result.frames = torch.cat(collected)
        return result


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _check_cancel(cancel: Callable[[], Any] | None) -> None:
    if cancel is not None and cancel():
        raise Interrupted("generation cancelled")


def _ddim_step(scheduler, noise_pred: torch.Tensor, timestep: int, latents: torch.Tensor,
               chunk: int = 32) -> torch.Tensor:
    """``scheduler.step`` (eta 0) applied ``chunk`` frames at a time. DDIM is elementwise, so the result is
    identical to one call; the chunking only bounds the temporaries to a few frames."""
    out = torch.empty_like(latents)
    for start in range(0, latents.shape[2], chunk):
        sl = slice(start, start + chunk)
        out[:, :, sl] = scheduler.step(noise_pred[:, :, sl], timestep, latents[:, :, sl], eta=0.0).prev_sample
    return out


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        import ctypes

        return getattr(ctypes.CDLL("libc.so.6"), "malloc_trim", None)
    except OSError:
        return None


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc ``malloc_trim``) after each CPU window / decode chunk, so
    that allocator fragmentation does not make the peak RSS creep up with the number of windows (measured
    by bench/memory.py). No-op without glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _motion_max_frames(unet) -> int | None:
    """Longest window the motion modules' position table allows (None without motion modules)."""
    kwargs = getattr(unet, "unet_additional_kwargs", None) or {}
    motion = kwargs.get("motion_module_kwargs") or {}
    if not kwargs.get("use_motion_module", False) or not motion.get("temporal_position_encoding", False):
        return None
    return int(motion["temporal_position_encoding_max_len"])
