"""Weight-compatible EchoMimicV2 networks, built on diffusers building blocks.

* :class:`ReferenceUNet2DModel` — ReferenceNet; fills a :class:`ReferenceBank`.
* :class:`DenoisingUNet3DModel` — denoiser with motion modules, audio cross-attention (×3.0),
  reference attention, pose features added after ``conv_in``.
* :class:`PoseEncoder` — hand-pose image encoder.
* :class:`VanillaTemporalModule` — AnimateDiff motion module.
* Attention processors and :class:`EchoAttentionContext` in :mod:`.attention`.
"""

from .attention import (AudioCrossAttnProcessor, EchoAttentionContext, ReferenceBank, ReferenceReadProcessor,
                        ReferenceWriteProcessor, SelfAttnProcessor, official_reference_order)
from .configs import (AUDIO_FEATURE_RATIO, LATENT_SCALE, OFFICIAL_NOISE_SCHEDULER_KWARGS, OFFICIAL_POSE_ENCODER_KWARGS,
                      OFFICIAL_UNET_ADDITIONAL_KWARGS, SD_IMAGE_VARIATIONS_UNET_CONFIG, SD_VAE_FT_MSE_CONFIG,
                      denoising_unet_config, reference_unet_config)
from .denoising_unet import (MOTION_MODULE_KEY, DenoisingUNet3DModel, DenoisingUNetOutput, is_audio_attention_key,
                             is_motion_module_key, reference_pairing, split_motion_state_dict)
from .motion_module import MotionModules, VanillaTemporalModule
from .pose_encoder import PoseEncoder
from .reference_unet import ReferenceUNet2DModel, ReferenceUNetOutput

__all__ = [
    "AudioCrossAttnProcessor", "EchoAttentionContext", "ReferenceBank", "ReferenceReadProcessor",
    "ReferenceWriteProcessor", "SelfAttnProcessor", "official_reference_order",
    "AUDIO_FEATURE_RATIO", "LATENT_SCALE", "OFFICIAL_NOISE_SCHEDULER_KWARGS", "OFFICIAL_POSE_ENCODER_KWARGS",
    "OFFICIAL_UNET_ADDITIONAL_KWARGS", "SD_IMAGE_VARIATIONS_UNET_CONFIG", "SD_VAE_FT_MSE_CONFIG", "denoising_unet_config", "reference_unet_config",
    "MOTION_MODULE_KEY", "DenoisingUNet3DModel", "DenoisingUNetOutput", "is_motion_module_key", "is_audio_attention_key",
    "reference_pairing", "split_motion_state_dict", "MotionModules", "VanillaTemporalModule", "PoseEncoder",
    "ReferenceUNet2DModel", "ReferenceUNetOutput",
]
