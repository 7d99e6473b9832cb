"""Denoising 3-D UNet of EchoMimicV2 (``denoising_unet.pth`` + ``motion_module.pth``).

Official class: ``EMOUNet3DConditionModel`` (AnimateDiff-style). Built from the SD-image-variations
unet config with 3-D block types and the ``unet_additional_kwargs`` of
``configs/inference/inference_v2.yaml``. What differs from a stock diffusers UNet, and is therefore
assembled here from diffusers blocks:

* frames are folded into the batch (``[(b f), C, h, w]``); every op is per frame ("inflated" conv and
  GroupNorm) except the AnimateDiff "Vanilla" motion modules (:mod:`.motion_module`), present at the
  levels listed in ``motion_module_resolutions`` and in the mid block;
* PoseEncoder features are *added* to the ``conv_in`` output;
* ``attn2`` attends to whisper audio tokens (``cross_attention_dim`` 384) and its output is multiplied
  by ``audio_feature_ratio`` (3.0) — :class:`AudioCrossAttnProcessor`;
* ``attn1`` also attends to the ReferenceNet bank — :class:`ReferenceReadProcessor`;
* training hooks: audio on/off, audio region masks, gradient checkpointing.

Module paths equal the official state-dict keys (``down_blocks.i.{resnets,attentions,motion_modules}.j``,
``down_blocks.i.downsamplers.0.conv``, ``mid_block.*``, ``up_blocks.i.*``, ``up_blocks.i.upsamplers.0.conv``,
``conv_norm_out``, ``conv_out``, ``time_embedding.linear_{1,2}``, ``conv_in``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from einops import rearrange
from torch import nn

from ..errors import CheckpointError, ConfigError, InputError
from .attention import (AudioCrossAttnProcessor, EchoAttentionContext, ReferenceBank, ReferenceReadProcessor)
from .configs import AUDIO_FEATURE_RATIO
from .unet_common import DeepFeatures, EchoUNetMixin, FrameHead, as_per_level

__all__ = ["DenoisingUNet3DModel", "DenoisingUNetOutput", "MOTION_MODULE_KEY", "is_motion_module_key",
           "is_audio_attention_key",
           "split_motion_state_dict", "reference_pairing"]

MOTION_MODULE_KEY = "motion_modules."


def is_motion_module_key(key: str) -> bool:
    """True for keys of the motion modules (the content of ``motion_module.pth``)."""
    return MOTION_MODULE_KEY in key


_AUDIO_ATTENTION = re.compile(r"\.transformer_blocks\.\d+\.(attn2|norm2)\.")


def is_audio_attention_key(key: str) -> bool:
    """True for the audio cross-attention (``attn2``) and the LayerNorm before it (``norm2``) of a
    spatial transformer block (not the ResNets' ``norm2``, not the motion modules)."""
    return not is_motion_module_key(key) and _AUDIO_ATTENTION.search(key) is not None


def split_motion_state_dict(state_dict: Mapping[str, torch.Tensor]
                            ) -> Tuple["OrderedDict[str, torch.Tensor]", "OrderedDict[str, torch.Tensor]"]:
    """Split a denoiser state dict into ``(motion, rest)``: keys containing ``"motion_modules."``
    (→ ``motion_module.pth``) and all others (→ ``denoising_unet.pth``)."""
    motion, rest = OrderedDict(), OrderedDict()
    for k, v in state_dict.items():
        (motion if is_motion_module_key(k) else rest)[k] = v
    return motion, rest


@dataclass
class DenoisingUNetOutput(BaseOutput):
    """``sample``: the v-prediction ``[b, C_out, f, h, w]``."""

    sample: torch.Tensor


class DenoisingUNet3DModel(EchoUNetMixin, ModelMixin, ConfigMixin):
    """EchoMimicV2 denoiser: ``[b, 4, f, h, w]`` latents → ``[b, 4, f, h, w]`` v-prediction.

    Config: the SD-image-variations unet config (block types may be given in 2-D or 3-D spelling)
    plus the official ``unet_additional_kwargs``; see :func:`echomimic_core.models.denoising_unet_config`.
    Only what EchoMimicV2 uses is supported: ``use_inflated_groupnorm`` True, no temporal attention in
    the spatial blocks, Vanilla motion modules. ``audio_feature_ratio`` (3.0) is the factor the
    official code hard-codes in its block forward.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, sample_size: Optional[int] = None, in_channels: int = 4, out_channels: int = 4,
                 center_input_sample: bool = False, flip_sin_to_cos: bool = True, freq_shift: int = 0,
                 down_block_types: Sequence[str] = ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D",
                                                    "CrossAttnDownBlock3D", "DownBlock3D"),
                 mid_block_type: str = "UNetMidBlock3DCrossAttn",
                 up_block_types: Sequence[str] = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D",
                                                  "CrossAttnUpBlock3D"),
                 block_out_channels: Sequence[int] = (320, 640, 1280, 1280), layers_per_block: int = 2,
                 downsample_padding: int = 1, mid_block_scale_factor: float = 1.0, act_fn: str = "silu",
                 norm_num_groups: int = 32, norm_eps: float = 1e-5, cross_attention_dim: int = 384,
                 attention_head_dim: Union[int, Sequence[int]] = 8, use_linear_projection: bool = False,
                 upcast_attention: bool = False, resnet_time_scale_shift: str = "default",
                 use_inflated_groupnorm: bool = True, use_motion_module: bool = True,
                 motion_module_resolutions: Sequence[int] = (1, 2, 4, 8), motion_module_mid_block: bool = True,
                 motion_module_decoder_only: bool = False, motion_module_type: str = "Vanilla",
                 motion_module_kwargs: Optional[dict] = None, unet_use_cross_frame_attention: Optional[bool] = False,
                 unet_use_temporal_attention: Optional[bool] = False, audio_feature_ratio: float = AUDIO_FEATURE_RATIO,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if not use_inflated_groupnorm:
            raise ConfigError("use_inflated_groupnorm=False is not supported (EchoMimicV2 uses per-frame GroupNorm)")
        if unet_use_temporal_attention or unet_use_cross_frame_attention:
            raise ConfigError("unet_use_temporal_attention / unet_use_cross_frame_attention are not supported")
        n = len(block_out_channels)
        heads = as_per_level(attention_head_dim, n)
        mm_kwargs = dict(motion_module_kwargs or {})
        down_mm = [bool(use_motion_module and (2 ** i) in motion_module_resolutions and not motion_module_decoder_only)
                   for i in range(n)]
        up_mm = [bool(use_motion_module and (2 ** (n - 1 - i)) in motion_module_resolutions) for i in range(n)]
        self._build_levels(in_channels=in_channels, block_out_channels=block_out_channels,
                           down_block_types=down_block_types, up_block_types=up_block_types,
                           mid_block_type=mid_block_type, layers_per_block=layers_per_block,
                           downsample_padding=downsample_padding, mid_block_scale_factor=mid_block_scale_factor,
                           act_fn=act_fn, norm_num_groups=norm_num_groups, norm_eps=norm_eps,
                           cross_attention_dim=cross_attention_dim, heads=heads, flip_sin_to_cos=flip_sin_to_cos,
                           freq_shift=freq_shift, use_linear_projection=use_linear_projection,
                           upcast_attention=upcast_attention, resnet_time_scale_shift=resnet_time_scale_shift,
                           dropout=dropout, motion_levels_down=down_mm, motion_levels_up=up_mm,
                           motion_mid=bool(use_motion_module and motion_module_mid_block),
                           motion_module_type=motion_module_type if use_motion_module else None,
                           motion_module_kwargs=mm_kwargs,
                           # the official 3-D UNet builds TimestepEmbedding with its default SiLU
                           time_embedding_act_fn="silu")
        self.conv_norm_out = nn.GroupNorm(num_channels=block_out_channels[0], num_groups=norm_num_groups,
                                          eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)
        self._install_echo_processors()

    def _install_echo_processors(self) -> None:
        ratio = float(self.config.audio_feature_ratio)
        for path, block in self.transformer_blocks().items():
            block.attn1.set_processor(ReferenceReadProcessor(path))
            if block.attn2 is not None:
                block.attn2.set_processor(AudioCrossAttnProcessor(path, scale=ratio))

    @property
    def unet_additional_kwargs(self) -> Dict[str, object]:
        """The official ``unet_additional_kwargs`` view of this model's config."""
        keys = ("use_inflated_groupnorm", "unet_use_cross_frame_attention", "unet_use_temporal_attention",
                "use_motion_module", "cross_attention_dim", "motion_module_resolutions", "motion_module_mid_block",
                "motion_module_decoder_only", "motion_module_type", "motion_module_kwargs")
        return {k: self.config[k] for k in keys}

    # -- motion-module helpers (trainer) ----------------------------------------------------------------

    def motion_module_state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        """The keys of ``motion_module.pth`` (all containing ``"motion_modules."``)."""
        return split_motion_state_dict(self.state_dict())[0]

    def named_motion_module_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        return ((k, p) for k, p in self.named_parameters() if is_motion_module_key(k))

    def named_spatial_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """Every parameter except the motion modules (the stage-1 trainable part)."""
        return ((k, p) for k, p in self.named_parameters() if not is_motion_module_key(k))

    def named_audio_attention_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """Parameters of the audio cross-attention (``attn2``) and the LayerNorm before it (``norm2``) of
        every spatial transformer block (not the ResNets' ``norm2``)."""
        return ((k, p) for k, p in self.named_parameters() if is_audio_attention_key(k))

    # -- forward ---------------------------------------------------------------------------------------

    def forward(self, sample: torch.Tensor, timestep: Union[torch.Tensor, float, int],
                audio: Optional[torch.Tensor] = None, pose_features: Optional[torch.Tensor] = None,
                reference_bank: Optional[ReferenceBank] = None, reference_mask: Optional[torch.Tensor] = None,
                reference_dtype: Optional[torch.dtype] = torch.float16, audio_enabled: bool = True,
                audio_region_mask: Optional[torch.Tensor] = None, region_mask_mode: str = "nearest",
                audio_null_rows: Optional[Sequence[bool]] = None, attention_cache: Optional[dict] = None,
                deep_features: Optional[DeepFeatures] = None, frame_head: Optional[FrameHead] = None,
                return_dict: bool = True) -> Union[DenoisingUNetOutput, Tuple[torch.Tensor]]:
        """Predict ``v`` for a window of latents.

        Args:
            sample: noisy latents ``[b, C_in, f, h, w]``.
            timestep: 0-dim tensor / number (broadcast to the batch) or ``[b]``.
            audio: whisper tokens ``[b, f, n, 384]`` (``n`` = 10·(layers+1), 50 for whisper-tiny), or
                ``[b, f, 384]`` (one token per frame). None = audio attention skipped (as ``audio_enabled``
                False). For the CFG unconditional half pass zeros (official), not None.
            pose_features: PoseEncoder output ``[b, C0, f, h, w]`` added after ``conv_in``; None = no pose.
                For the CFG unconditional half pass zeros (official).
            reference_bank: bank written by the ReferenceNet (entries ``[1 or b, h·w, C]``); None = the
                reference attention is plain self-attention for everyone.
            reference_mask: ``[b]`` bool, which batch elements read the reference; None = all. The
                official CFG batch is ``[uncond, cond]`` → ``[False, True]``.
            reference_dtype: the bank is rounded to this dtype before the read; the official default
                ``torch.float16`` (quirk 4, even in fp32 runs). None = use the bank as is.
            audio_enabled: False mutes audio cross-attention (skips its residual; training phases 1–2).
            audio_region_mask: ``[b, f, h, w]`` (latent resolution) multiplying the audio
                cross-attention residual at every level, resized with ``region_mask_mode``
                (``"nearest"`` or ``"area"``). Training only ("partial attention").
            audio_null_rows: ``[b]`` Python bools, True where the caller guarantees all-zero audio tokens (the
                CFG unconditional half): that cross-attention is a constant and is not computed.
            attention_cache: a dict kept for one generation: the reference keys/values and the zero-audio
                constants are computed once per layer and reused (sampling only: weights and bank fixed).
            deep_features: a :class:`DeepFeatures` (DeepCache): filled by a full pass, or a shallow pass that
                reuses its ``reuse`` tensor (sampling only; changes the output).
            frame_head: this call's :class:`FrameHead`, computed beforehand with :meth:`frame_head` (frames
                shared by several windows are computed once); ``pose_features`` are then not used again.
            A ``reference_mask`` given as a Python sequence of bools is split on the host (no device sync).
        Returns:
            :class:`DenoisingUNetOutput` with ``sample [b, C_out, f, h, w]``, or a 1-tuple.
        """
        emb, tokens, ctx = self._conditioning(sample, timestep, audio, pose_features, reference_bank, reference_mask,
                                              reference_dtype, audio_enabled, audio_region_mask, region_mask_mode,
                                              audio_null_rows, attention_cache)
        b, _, f, h, w = sample.shape
        if frame_head is None:
            frame_head = self._head(sample, pose_features, emb, tokens, ctx)
        elif frame_head.inputs.shape[0] != b * f or frame_head.hidden.shape[0] != b * f:
            raise InputError(f"frame_head holds {frame_head.inputs.shape[0]} frames for a call of {b}x{f}")
        x = self._run_levels(frame_head.inputs, emb, f, tokens, {"echo_context": ctx}, deep_features,
                             head=frame_head.hidden)
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        out = rearrange(x, "(b f) c h w -> b c f h w", f=f)
        if not return_dict:
            return (out,)
        return DenoisingUNetOutput(sample=out)

    def frame_head(self, sample: torch.Tensor, timestep: Union[torch.Tensor, float, int], **conditioning) -> FrameHead:
        """The :class:`FrameHead` of ``sample [b, C_in, f, h, w]`` with ``forward``'s conditioning keywords (audio,
        pose features, reference bank and mask, ...). The ``f`` frames need not be a window: any set of frames,
        e.g. the distinct frames of several overlapping windows."""
        emb, tokens, ctx = self._conditioning(sample, timestep, **conditioning)
        return self._head(sample, conditioning.get("pose_features"), emb, tokens, ctx)

    def _head(self, sample, pose_features, emb, tokens, ctx) -> FrameHead:
        b, _, f, h, w = sample.shape
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        x = self.conv_in(rearrange(sample, "b c f h w -> (b f) c h w"))
        if pose_features is not None:
            if pose_features.ndim != 5 or pose_features.shape[0] != b or pose_features.shape[2] != f \
                    or tuple(pose_features.shape[-2:]) != (h, w):
                raise InputError(f"pose_features must be [b={b}, C, f={f}, h={h}, w={w}], "
                                 f"got {tuple(pose_features.shape)}")
            x = x + rearrange(pose_features, "b c f h w -> (b f) c h w").to(x.dtype)
        return FrameHead(inputs=x, hidden=self._frame_head(x, emb, tokens, {"echo_context": ctx}))

    def _conditioning(self, sample, timestep, audio=None, pose_features=None, reference_bank=None, reference_mask=None,
                      reference_dtype=torch.float16, audio_enabled=True, audio_region_mask=None,
                      region_mask_mode="nearest", audio_null_rows=None, attention_cache=None):
        """Checked inputs of a call: ``(emb [(b f), T], audio tokens [(b f), n, C] or None, EchoAttentionContext)``."""
        if sample.ndim != 5:
            raise InputError(f"sample must be [b, c, f, h, w], got shape {tuple(sample.shape)}")
        b, _, f, h, w = sample.shape
        emb = self._time_embedding(timestep, b, sample.device, self.dtype)
        emb = emb.repeat_interleave(f, dim=0)  # [(b f), T]: the official broadcast over frames
        dtype = self.conv_in.weight.dtype

        tokens = None
        if audio is not None:
            if audio.ndim == 4 and audio.shape[:2] == (b, f):
                tokens = rearrange(audio, "b f n c -> (b f) n c")
            elif audio.ndim == 3 and audio.shape[:2] == (b, f):
                tokens = rearrange(audio, "b f c -> (b f) 1 c")
            else:
                raise InputError(f"audio must be [b={b}, f={f}, tokens, {self.config.cross_attention_dim}], "
                                 f"got {tuple(audio.shape)}")
            tokens = tokens.to(dtype)

        reference_rows = None
        if isinstance(reference_mask, (list, tuple)):
            reference_rows = tuple(bool(m) for m in reference_mask)
            if len(reference_rows) != b:
                raise InputError(f"reference_mask needs one entry per batch element ({b}), got {len(reference_rows)}")
            reference_mask = None
        if audio_null_rows is not None:
            audio_null_rows = tuple(bool(m) for m in audio_null_rows)
            if len(audio_null_rows) != b:
                raise InputError(f"audio_null_rows needs one entry per batch element ({b}), got {len(audio_null_rows)}")
        if reference_mask is not None:
            reference_mask = torch.as_tensor(reference_mask, dtype=torch.bool, device=sample.device).reshape(-1)
            if reference_mask.shape[0] != b:
                raise InputError(f"reference_mask needs one entry per batch element ({b}), got "
                                 f"{reference_mask.shape[0]}")
        if audio_region_mask is not None and (audio_region_mask.ndim != 4 or audio_region_mask.shape[:2] != (b, f)):
            raise InputError(f"audio_region_mask must be [b={b}, f={f}, h, w], got {tuple(audio_region_mask.shape)}")

        ctx = EchoAttentionContext(num_frames=f, reference_bank=reference_bank, reference_mask=reference_mask,
                                   reference_dtype=reference_dtype, audio_enabled=audio_enabled,
                                   audio_region_mask=audio_region_mask, region_mask_mode=region_mask_mode,
                                   latent_size=(h, w), reference_rows=reference_rows,
                                   audio_null_rows=audio_null_rows, cache=attention_cache)
        return emb, tokens, ctx


def reference_pairing(reference_unet: nn.Module, denoising_unet: nn.Module) -> Dict[str, str]:
    """Writer path → reader path, exactly as the official ``ReferenceAttentionControl.update`` pairs them
    (both block lists in official order, zipped). For the official networks it is the identity map
    (same module path); it is computed rather than assumed so a mismatch is reported."""
    writers = reference_unet.reference_block_order()
    readers = denoising_unet.reference_block_order()
    if len(writers) != len(readers):
        raise CheckpointError(f"the ReferenceNet has {len(writers)} transformer blocks but the denoiser has {len(readers)}")
    wb, rb = reference_unet.transformer_blocks(), denoising_unet.transformer_blocks()
    for wp, rp in zip(writers, readers):
        if wb[wp].norm1.normalized_shape != rb[rp].norm1.normalized_shape:
            raise CheckpointError(f"reference block {wp} and denoiser block {rp} have different widths")
    return dict(zip(writers, readers))
