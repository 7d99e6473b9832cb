"""Weight-compatible EchoMimicV2 networks, built on diffusers building blocks.

* :class:`ReferenceUNet2DModel` — ReferenceNet; fills a :class:`ReferenceBank`.
* :class:`DenoisingUNet3DModel` — denoiser with motion modules, audio cross-attention (×3.0),
  reference attention, pose features added after ``conv_in``.
* :class:`PoseEncoder` — hand-pose image encoder.
* :class:`VanillaTemporalModule` — AnimateDiff motion module.
* Attention processors and :class:`EchoAttentionContext` in :mod:`.attention`.

Names are exported lazily (PEP 562): importing ``echomimic_core.models.configs`` (plain dicts and numbers,
used by the settings and the CLI's argument checks) must not import torch and diffusers, which take
seconds; each network module loads on the first use of one of its names.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "AudioCrossAttnProcessor": "attention",
    "EchoAttentionContext": "attention",
    "ReferenceBank": "attention",
    "ReferenceReadProcessor": "attention",
    "ReferenceWriteProcessor": "attention",
    "SelfAttnProcessor": "attention",
    "official_reference_order": "attention",
    "AUDIO_FEATURE_RATIO": "configs",
    "LATENT_SCALE": "configs",
    "OFFICIAL_NOISE_SCHEDULER_KWARGS": "configs",
    "OFFICIAL_POSE_ENCODER_KWARGS": "configs",
    "OFFICIAL_UNET_ADDITIONAL_KWARGS": "configs",
    "SD_IMAGE_VARIATIONS_UNET_CONFIG": "configs",
    "SD_VAE_FT_MSE_CONFIG": "configs",
    "denoising_unet_config": "configs",
    "reference_unet_config": "configs",
    "MOTION_MODULE_KEY": "denoising_unet",
    "DenoisingUNet3DModel": "denoising_unet",
    "DenoisingUNetOutput": "denoising_unet",
    "is_audio_attention_key": "denoising_unet",
    "is_motion_module_key": "denoising_unet",
    "reference_pairing": "denoising_unet",
    "split_motion_state_dict": "denoising_unet",
    "DeepFeatures": "unet_common",
    "FrameHead": "unet_common",
    "MotionModules": "motion_module",
    "VanillaTemporalModule": "motion_module",
    "PoseEncoder": "pose_encoder",
    "ReferenceUNet2DModel": "reference_unet",
    "ReferenceUNetOutput": "reference_unet",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
