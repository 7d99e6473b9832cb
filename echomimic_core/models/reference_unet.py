"""ReferenceNet of EchoMimicV2 (``reference_unet.pth``).

An SD1.5-layout 2-D UNet (config from ``sd-image-variations-diffusers/unet/config.json``) with three
differences from diffusers' ``UNet2DConditionModel``, which is why the skeleton is written here
(from diffusers blocks) instead of subclassing it:

1. its transformer blocks have no cross-attention (no ``attn2``/``norm2``): they are built with
   ``cross_attention_dim=None``;
2. there is no ``conv_norm_out``/``conv_out``: ``forward`` returns the last up-block feature map;
3. the input of every ``attn1`` (the ``norm1`` output) is written into a :class:`ReferenceBank` by
   :class:`ReferenceWriteProcessor`.

The state dict equals the official one key for key (570 keys at full size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from ..errors import InputError
from .attention import EchoAttentionContext, ReferenceBank, ReferenceWriteProcessor
from .unet_common import EchoUNetMixin, as_per_level

__all__ = ["ReferenceUNet2DModel", "ReferenceUNetOutput"]


@dataclass
class ReferenceUNetOutput(BaseOutput):
    """``sample``: last up-block feature map ``[b, C0, h, w]`` (unused by the pipeline);
    ``reference_bank``: the features written by every transformer block."""

    sample: torch.Tensor
    reference_bank: ReferenceBank


class ReferenceUNet2DModel(EchoUNetMixin, ModelMixin, ConfigMixin):
    """ReferenceNet: ``ref_latents [b, 4, h, w]`` at timestep 0 → reference bank (+ feature map).

    Config arguments are those of the SD-image-variations ``unet/config.json`` (see
    :func:`echomimic_core.models.reference_unet_config`); ``cross_attention_dim``, ``out_channels`` are
    kept for config compatibility but unused (no ``attn2``, no ``conv_out``).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, sample_size: Optional[int] = None, in_channels: int = 4, out_channels: int = 4,
                 center_input_sample: bool = False, flip_sin_to_cos: bool = True, freq_shift: int = 0,
                 down_block_types: Sequence[str] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                    "CrossAttnDownBlock2D", "DownBlock2D"),
                 mid_block_type: str = "UNetMidBlock2DCrossAttn",
                 up_block_types: Sequence[str] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                                  "CrossAttnUpBlock2D"),
                 block_out_channels: Sequence[int] = (320, 640, 1280, 1280), layers_per_block: int = 2,
                 downsample_padding: int = 1, mid_block_scale_factor: float = 1.0, act_fn: str = "silu",
                 norm_num_groups: int = 32, norm_eps: float = 1e-5, cross_attention_dim: Optional[int] = 768,
                 attention_head_dim: Union[int, Sequence[int]] = 8,
                 num_attention_heads: Optional[Union[int, Sequence[int]]] = None,
                 use_linear_projection: bool = False, upcast_attention: bool = False,
                 resnet_time_scale_shift: str = "default", dropout: float = 0.0) -> None:
        super().__init__()
        n = len(block_out_channels)
        # diffusers' legacy naming: attention_head_dim is the number of heads in SD1.x configs
        heads = as_per_level(num_attention_heads or attention_head_dim, n)
        self._build_levels(in_channels=in_channels, block_out_channels=block_out_channels,
                           down_block_types=down_block_types, up_block_types=up_block_types,
                           mid_block_type=mid_block_type, layers_per_block=layers_per_block,
                           downsample_padding=downsample_padding, mid_block_scale_factor=mid_block_scale_factor,
                           act_fn=act_fn, norm_num_groups=norm_num_groups, norm_eps=norm_eps,
                           cross_attention_dim=None, heads=heads, flip_sin_to_cos=flip_sin_to_cos,
                           freq_shift=freq_shift, use_linear_projection=use_linear_projection,
                           upcast_attention=upcast_attention, resnet_time_scale_shift=resnet_time_scale_shift,
                           dropout=dropout)
        self._install_echo_processors()

    def _install_echo_processors(self) -> None:
        for path, block in self.transformer_blocks().items():
            block.attn1.set_processor(ReferenceWriteProcessor(path))

    def forward(self, sample: torch.Tensor, timestep: Union[torch.Tensor, float, int],
                encoder_hidden_states: Optional[torch.Tensor] = None,
                reference_bank: Optional[ReferenceBank] = None,
                return_dict: bool = True) -> Union[ReferenceUNetOutput, Tuple[torch.Tensor, ReferenceBank]]:
        """Run the ReferenceNet.

        Args:
            sample: reference latents ``[b, C_in, h, w]`` (VAE mean × 0.18215 in the pipeline).
            timestep: 0-dim / ``[b]`` tensor or number; the official pipeline passes 0.
            encoder_hidden_states: accepted for API symmetry and ignored (no cross-attention).
            reference_bank: bank to fill (a new one when None); entries ``[b, h_l·w_l, C_l]`` keyed by
                block path, overwritten if present.
        Returns:
            :class:`ReferenceUNetOutput` (``sample [b, C0, h, w]``, ``reference_bank``), or a tuple.
        """
        if sample.ndim != 4:
            raise InputError(f"reference sample must be [b, c, h, w], got shape {tuple(sample.shape)}")
        bank = reference_bank if reference_bank is not None else ReferenceBank()
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        emb = self._time_embedding(timestep, sample.shape[0], sample.device, self.dtype)
        ctx = EchoAttentionContext(num_frames=1, reference_bank=bank)
        x = self.conv_in(sample)
        x = self._run_levels(x, emb, 1, None, {"echo_context": ctx})
        if not return_dict:
            return x, bank
        return ReferenceUNetOutput(sample=x, reference_bank=bank)
