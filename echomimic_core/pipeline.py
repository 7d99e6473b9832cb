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

How it is computed faster at the same output (window batches, cached pose features and reference
projections, no uncond audio attention, other schedulers) is :mod:`echomimic_core.engine`; the settings of
a run are one :class:`~echomimic_core.settings.GenerationSettings`.

Memory is flat in the video length: pose images are drawn on demand, pose features are kept only up to a
budget, and decoded frames are handed to ``on_frames`` chunk by chunk instead of being collected. Only the
latents (4 channels at 1/8 resolution) and the audio features exist for the whole video.

Public API::

    pipe = EchoMimicPipeline.from_folder("pretrained_weights", variant="normal", device="cuda",
                                         dtype=torch.float16)
    result = pipe.generate(reference_image, audio_features, poses,
                           GenerationSettings(width=768, height=768, steps=30, guidance_scale=2.5, seed=3407),
                           on_frames=writer.write)
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .engine import Conditioning, GenerationPlan, GenerationResult, Progress, SamplingEngine  # noqa: F401
from .inputs import (fit_reference_image, load_reference_image, normalize_audio_features,  # noqa: F401
                     preprocess_reference)
from .models.configs import LATENT_SCALE
from .settings import settings_from_kwargs
from .pose_source import PoseSource  # noqa: F401
from .profile import Profiler
from .sampling import make_scheduler
from .settings import GenerationSettings, check_positive, check_size  # noqa: F401

__all__ = ["EchoMimicPipeline", "GenerationResult", "GenerationSettings", "PoseSource", "Progress",
           "preprocess_reference", "load_reference_image"]


# ----------------------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------------------
class EchoMimicPipeline(SamplingEngine):
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
        self._compile = False

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
    def generate(self, reference_image: Any, audio_features: Any, poses: Any,
                 settings: GenerationSettings | None = None, *,
                 decode: bool = True,
                 on_frames: Callable[[torch.Tensor], Any] | None = None,
                 on_progress: Callable[[Progress], Any] | None = None,
                 cancel: Callable[[], Any] | None = None,
                 latents: torch.Tensor | None = None,
                 callback_on_step_end: Callable[..., Any] | None = None,
                 profiler: Profiler | None = None,
                 **overrides) -> GenerationResult:
        """Generate a video: :meth:`plan` (all checks, nothing heavy) -> :meth:`prepare` -> :meth:`denoise_step`
        per timestep -> :meth:`decode`.

        * ``reference_image``: path, PIL image, uint8 ``[H,W,3]`` or float tensor in [0, 1]; centre-cropped to
          the target aspect and resized (with a warning) when it differs.
        * ``audio_features``: ``[chunks, tokens, 384]`` per-frame whisper chunks (``audio.encode_audio``).
        * ``poses``: see :class:`PoseSource`; must cover the video (fit the length beforehand).
        * ``settings``: a :class:`GenerationSettings`; keyword ``overrides`` (``width=``, ``steps=``,
          ``guidance_scale=``, ... any field name; ``None`` values ignored) are laid over it.
        * ``on_frames(frames)``: receives decoded float32 ``[n, 3, H, W]`` chunks in order; when given,
          frames are not collected (flat memory). ``on_progress(Progress)`` after every window batch and chunk.
        * ``cancel()``: checked before every window batch and decode chunk; returning True raises
          :class:`~echomimic_core.errors.Interrupted` (a cancel function may also raise its own exception).
        * ``latents``: optional initial latents (instead of seeded noise).
        * ``callback_on_step_end(pipe, step, timestep, {"latents", "noise_pred"})`` after every scheduler step
          (diffusers' convention); returning ``{"latents": x}`` replaces the latents the next step starts from
          (teacher forcing in the parity tests).
        * ``profiler``: a :class:`~echomimic_core.profile.Profiler` that receives the per-phase wall times.
        """
        unknown = set(overrides) - set(GenerationSettings.__dataclass_fields__)
        if unknown:
            raise TypeError(f"generate() got unexpected keyword arguments {sorted(unknown)}")
        settings = settings_from_kwargs(settings, **overrides)
        plan = self.plan(reference_image, audio_features, poses, settings, latents=latents)
        return self.run(plan, decode=decode, on_frames=on_frames, on_progress=on_progress, cancel=cancel,
                        callback_on_step_end=callback_on_step_end, profiler=profiler)
