"""Official configuration values and the functions that turn an SD-image-variations unet config
(+ ``unet_additional_kwargs``) into the constructor arguments of the EchoMimicV2 networks."""

from __future__ import annotations

import copy
import inspect
from typing import Any, Dict, Mapping, Optional

from ..errors import ConfigError

__all__ = ["LATENT_SCALE", "AUDIO_FEATURE_RATIO", "OFFICIAL_UNET_ADDITIONAL_KWARGS", "OFFICIAL_NOISE_SCHEDULER_KWARGS",
           "OFFICIAL_POSE_ENCODER_KWARGS", "SD_IMAGE_VARIATIONS_UNET_CONFIG", "SD_VAE_FT_MSE_CONFIG", "reference_unet_config", "denoising_unet_config"]

#: VAE latent scale hard-coded by the official pipeline and trainer (not read from the VAE config)
LATENT_SCALE = 0.18215

#: factor on the audio cross-attention output, hard-coded in the official 3-D transformer block
AUDIO_FEATURE_RATIO = 3.0

#: ``unet_additional_kwargs`` of configs/inference/inference_v2.yaml (app.py hard-codes the same)
OFFICIAL_UNET_ADDITIONAL_KWARGS: Dict[str, Any] = {
    "use_inflated_groupnorm": True,
    "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False,
    "use_motion_module": True,
    "cross_attention_dim": 384,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": True,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 32,
        "temporal_attention_dim_div": 1,
    },
}

#: VAE latent scale, hard-coded in the official pipelines (not read from the VAE config)
LATENT_SCALE = 0.18215

#: ``noise_scheduler_kwargs`` of configs/inference/inference_v2.yaml (diffusers DDIMScheduler)
OFFICIAL_NOISE_SCHEDULER_KWARGS: Dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "clip_sample": False,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}

#: ``PoseEncoder(320, conditioning_channels=3, block_out_channels=(16, 32, 96, 256))`` of infer.py
OFFICIAL_POSE_ENCODER_KWARGS: Dict[str, Any] = {
    "conditioning_embedding_channels": 320,
    "conditioning_channels": 3,
    "block_out_channels": (16, 32, 96, 256),
}

#: ``lambdalabs/sd-image-variations-diffusers`` ``unet/config.json`` (SD1.5 layout); used only when
#: no base folder is available (e.g. the full-size architecture test). Loading always reads the file.
SD_IMAGE_VARIATIONS_UNET_CONFIG: Dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

#: stabilityai/sd-vae-ft-mse ``config.json``; used only for a single diffusers-format VAE file without config
SD_VAE_FT_MSE_CONFIG: Dict[str, Any] = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 256,
    "scaling_factor": LATENT_SCALE, "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# base-config entries the EchoMimicV2 networks cannot honour when they have a non-default value
_UNSUPPORTED = {
    "class_embed_type": None, "num_class_embeds": None, "addition_embed_type": None,
    "encoder_hid_dim": None, "encoder_hid_dim_type": None, "time_cond_proj_dim": None,
    "time_embedding_type": "positional", "time_embedding_dim": None, "time_embedding_act_fn": None,
    "timestep_post_act": None, "conv_in_kernel": 3, "dual_cross_attention": False,
    "only_cross_attention": False, "transformer_layers_per_block": 1, "attention_type": "default",
    "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0, "cross_attention_norm": None,
    "class_embeddings_concat": False, "mid_block_only_cross_attention": None,
    "reverse_transformer_layers_per_block": None, "resnet_time_scale_shift": "default",
}


def _init_args(cls) -> set:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


def _filtered(cls, config: Mapping[str, Any], drop: tuple = ()) -> Dict[str, Any]:
    for key, default in _UNSUPPORTED.items():
        value = config.get(key, default)
        if value != default and not (key == "only_cross_attention" and isinstance(value, list) and not any(value)) \
                and not (key == "transformer_layers_per_block" and isinstance(value, list)
                         and all(v == 1 for v in value)):
            raise ConfigError(f"unet config: {key}={value!r} is not supported by EchoMimicV2")
    allowed = _init_args(cls) - set(drop)
    return {k: copy.deepcopy(v) for k, v in config.items() if k in allowed}


def reference_unet_config(base_config: Mapping[str, Any]) -> Dict[str, Any]:
    """ReferenceNet constructor kwargs from the base (SD-image-variations) unet ``config.json``."""
    from .reference_unet import ReferenceUNet2DModel

    return _filtered(ReferenceUNet2DModel, base_config)


def denoising_unet_config(base_config: Mapping[str, Any],
                          unet_additional_kwargs: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Denoiser constructor kwargs: the base config with 3-D block types, then ``unet_additional_kwargs``
    (so ``cross_attention_dim`` becomes the audio width 384), as the official ``from_pretrained_2d``."""
    from .denoising_unet import DenoisingUNet3DModel

    extra = dict(OFFICIAL_UNET_ADDITIONAL_KWARGS if unet_additional_kwargs is None else unet_additional_kwargs)
    cfg = _filtered(DenoisingUNet3DModel, base_config)
    cfg["down_block_types"] = [t.replace("2D", "3D") for t in base_config.get(
        "down_block_types", SD_IMAGE_VARIATIONS_UNET_CONFIG["down_block_types"])]
    cfg["up_block_types"] = [t.replace("2D", "3D") for t in base_config.get(
        "up_block_types", SD_IMAGE_VARIATIONS_UNET_CONFIG["up_block_types"])]
    cfg["mid_block_type"] = "UNetMidBlock3DCrossAttn"
    unknown = set(extra) - _init_args(DenoisingUNet3DModel)
    if unknown:
        raise ConfigError(f"unet_additional_kwargs: unknown keys {sorted(unknown)}")
    cfg.update(copy.deepcopy(extra))
    return cfg
