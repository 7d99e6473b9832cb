"""Parts shared by the two EchoMimicV2 UNets: building the levels from an SD-style config, the
level loop, timestep handling and attention-processor management."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from ..errors import ConfigError, InputError
from .attention import SelfAttnProcessor, _EchoProcessorBase, official_reference_order
from .unet_blocks import EchoDownBlock, EchoMidBlock, EchoUpBlock

CROSS_ATTN_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock3D")
PLAIN_DOWN = ("DownBlock2D", "DownBlock3D")
CROSS_ATTN_UP = ("CrossAttnUpBlock2D", "CrossAttnUpBlock3D")
PLAIN_UP = ("UpBlock2D", "UpBlock3D")
MID_TYPES = ("UNetMidBlock2DCrossAttn", "UNetMidBlock3DCrossAttn")


@dataclass
class DeepFeatures:
    """DeepCache hand-off for one denoiser call (Ma et al., "DeepCache: Accelerating Diffusion Models for Free",
    CVPR 2024): the deep levels change slowly from one step to the next, so a cached step recomputes only the
    outermost level and reuses the deep features of the last full step.

    ``reuse`` None: a full pass, which leaves the input of the last up block (``[(b f), C, h, w]``) in
    ``features``. ``reuse`` a tensor of that shape: a shallow pass - the first down block's layers (no
    downsampler), then the last up block on ``reuse`` with those fresh skips."""

    reuse: Optional[torch.Tensor] = None
    features: Optional[torch.Tensor] = None


@dataclass
class FrameHead:
    """The frame-local head of a denoiser call: ``inputs`` = ``conv_in`` output (+ pose features; the first skip)
    and ``hidden`` = the first down block's first ResNet → spatial transformer on it (the first motion module's
    input), both ``[(b f), C0, h, w]``. Only motion modules mix frames, so both are functions of each frame
    alone (its latent, pose features, audio tokens, the timestep and the reference): a frame that several
    context windows of one step share needs them once (``SamplingEngine``, ``share_frame_head``)."""

    inputs: torch.Tensor
    hidden: torch.Tensor


def as_per_level(value: Union[int, Sequence[int]], n: int) -> List[int]:
    return [value] * n if isinstance(value, int) else list(value)


def prepare_timesteps(timestep: Union[torch.Tensor, float, int], batch: int, device: torch.device) -> torch.Tensor:
    """0-dim / [1] / [b] tensor or a Python number → ``[b]`` tensor (official: broadcast to the batch)."""
    if not torch.is_tensor(timestep):
        dtype = torch.float64 if isinstance(timestep, float) else torch.int64
        timestep = torch.tensor([timestep], dtype=dtype, device=device)
    elif timestep.ndim == 0:
        timestep = timestep[None]
    timestep = timestep.to(device)
    if timestep.shape[0] not in (1, batch):
        raise InputError(f"timestep has {timestep.shape[0]} entries for a batch of {batch}")
    return timestep.expand(batch)


class EchoUNetMixin:
    """Builder and helpers mixed into :class:`ReferenceUNet2DModel` and :class:`DenoisingUNet3DModel`."""

    def _build_levels(self, *, in_channels: int, block_out_channels: Sequence[int], down_block_types: Sequence[str],
                      up_block_types: Sequence[str], mid_block_type: str, layers_per_block: int,
                      downsample_padding: int, mid_block_scale_factor: float, act_fn: str, norm_num_groups: int,
                      norm_eps: float, cross_attention_dim: Optional[int], heads: Sequence[int],
                      flip_sin_to_cos: bool, freq_shift: int, use_linear_projection: bool, upcast_attention: bool,
                      resnet_time_scale_shift: str, dropout: float = 0.0,
                      motion_levels_down: Sequence[bool] = (), motion_levels_up: Sequence[bool] = (),
                      motion_mid: bool = False, motion_module_type: Optional[str] = None,
                      motion_module_kwargs: Optional[dict] = None,
                      time_embedding_act_fn: Optional[str] = None) -> None:
        n = len(block_out_channels)
        if not (len(down_block_types) == len(up_block_types) == n):
            raise ConfigError("down_block_types, up_block_types and block_out_channels must have the same length")
        if mid_block_type not in MID_TYPES:
            raise ConfigError(f"mid_block_type {mid_block_type!r} is not supported")
        c0 = block_out_channels[0]
        temb = c0 * 4
        self.conv_in = nn.Conv2d(in_channels, c0, kernel_size=3, padding=1)
        self.time_proj = Timesteps(c0, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(c0, temb, act_fn=time_embedding_act_fn or act_fn)
        common = dict(temb_channels=temb, resnet_eps=norm_eps, resnet_groups=norm_num_groups, resnet_act_fn=act_fn,
                      cross_attention_dim=cross_attention_dim, use_linear_projection=use_linear_projection,
                      upcast_attention=upcast_attention, dropout=dropout,
                      resnet_time_scale_shift=resnet_time_scale_shift)

        down = []
        out_ch = c0
        for i, kind in enumerate(down_block_types):
            if kind not in CROSS_ATTN_DOWN + PLAIN_DOWN:
                raise ConfigError(f"down block type {kind!r} is not supported")
            in_ch, out_ch = out_ch, block_out_channels[i]
            mm = bool(motion_levels_down and motion_levels_down[i])
            down.append(EchoDownBlock(
                in_channels=in_ch, out_channels=out_ch, num_layers=layers_per_block, add_downsample=i < n - 1,
                downsample_padding=downsample_padding,
                num_attention_heads=heads[i] if kind in CROSS_ATTN_DOWN else None,
                motion_module_type=motion_module_type if mm else None, motion_module_kwargs=motion_module_kwargs,
                **common))
        self.down_blocks = nn.ModuleList(down)

        up = []
        rev_ch = list(reversed(block_out_channels))
        rev_heads = list(reversed(heads))
        out_ch = rev_ch[0]
        for i, kind in enumerate(up_block_types):
            if kind not in CROSS_ATTN_UP + PLAIN_UP:
                raise ConfigError(f"up block type {kind!r} is not supported")
            prev, out_ch = out_ch, rev_ch[i]
            in_ch = rev_ch[min(i + 1, n - 1)]
            mm = bool(motion_levels_up and motion_levels_up[i])
            up.append(EchoUpBlock(
                in_channels=in_ch, prev_output_channel=prev, out_channels=out_ch, num_layers=layers_per_block + 1,
                add_upsample=i < n - 1, num_attention_heads=rev_heads[i] if kind in CROSS_ATTN_UP else None,
                motion_module_type=motion_module_type if mm else None, motion_module_kwargs=motion_module_kwargs,
                **common))
        self.up_blocks = nn.ModuleList(up)
        # registered after up_blocks, like the official classes (matters only for the registration order)
        self.mid_block = EchoMidBlock(
            in_channels=block_out_channels[-1], num_attention_heads=heads[-1],
            output_scale_factor=mid_block_scale_factor,
            motion_module_type=motion_module_type if motion_mid else None, motion_module_kwargs=motion_module_kwargs,
            **common)
        self.num_upsamplers = n - 1

    # -- forward helpers ----------------------------------------------------------------------------

    def _time_embedding(self, timestep, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        t = prepare_timesteps(timestep, batch, device)
        return self.time_embedding(self.time_proj(t).to(dtype=dtype))

    def _run_levels(self, sample: torch.Tensor, emb: torch.Tensor, num_frames: int,
                    encoder_hidden_states: Optional[torch.Tensor],
                    cross_attention_kwargs: Optional[Dict[str, Any]],
                    deep: Optional[DeepFeatures] = None, head: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``sample [(b f), C0, h, w]`` (after conv_in) → last up-block output ``[(b f), C0, h, w]``
        (``deep``: see :class:`DeepFeatures`; ``head``: :meth:`_frame_head` of ``sample``, computed beforehand)."""
        if deep is not None and deep.reuse is not None:
            return self._run_outer_level(sample, emb, num_frames, encoder_hidden_states, cross_attention_kwargs,
                                         deep.reuse, head)
        factor = 2 ** self.num_upsamplers
        forward_upsample_size = any(s % factor != 0 for s in sample.shape[-2:])
        skips = (sample,)
        for k, block in enumerate(self.down_blocks):
            sample, res = block(sample, emb, num_frames, encoder_hidden_states, cross_attention_kwargs,
                                head=head if k == 0 else None)
            skips += res
        sample = self.mid_block(sample, emb, num_frames, encoder_hidden_states, cross_attention_kwargs)
        for i, block in enumerate(self.up_blocks):
            k = len(block.resnets)
            res, skips = skips[-k:], skips[:-k]
            size = skips[-1].shape[-2:] if (forward_upsample_size and i < len(self.up_blocks) - 1) else None
            if deep is not None and i == len(self.up_blocks) - 1:
                deep.features = sample
            sample = block(sample, res, emb, num_frames, encoder_hidden_states, cross_attention_kwargs, size)
        return sample

    def _frame_head(self, sample: torch.Tensor, emb: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor],
                    cross_attention_kwargs: Optional[Dict[str, Any]]) -> torch.Tensor:
        """The first down block's layer-0 ResNet → spatial transformer on ``sample`` (conv_in output): the part of
        the levels before the first motion module, i.e. per frame."""
        return self.down_blocks[0].spatial(0, sample, emb, encoder_hidden_states, cross_attention_kwargs)

    def supports_deep_features(self) -> bool:
        """Whether the outermost level can run alone (:class:`DeepFeatures`): the last up block takes exactly
        conv_in's output and the first down block's layer outputs as skips, and has no upsampler."""
        first, last = self.down_blocks[0], self.up_blocks[-1]
        return len(last.resnets) == len(first.resnets) + 1 and last.upsamplers is None

    def _run_outer_level(self, sample, emb, num_frames, encoder_hidden_states, cross_attention_kwargs,
                         deep_input: torch.Tensor, head: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self.supports_deep_features():
            raise ConfigError("this UNet's outermost level cannot run alone (DeepCache needs the SD layout)")
        first = self.down_blocks[0]
        skips = (sample,)
        for i in range(len(first.resnets)):
            done = i == 0 and head is not None
            sample = first._layer(i, head if done else sample, emb, num_frames, encoder_hidden_states,
                                  cross_attention_kwargs, spatial_done=done)
            skips += (sample,)
        return self.up_blocks[-1](deep_input, skips, emb, num_frames, encoder_hidden_states, cross_attention_kwargs)

    # -- transformer blocks and processors --------------------------------------------------------------

    def transformer_blocks(self) -> Dict[str, BasicTransformerBlock]:
        """Spatial transformer blocks by module path (``…attentions.j.transformer_blocks.0``)."""
        return {name: m for name, m in self.named_modules() if isinstance(m, BasicTransformerBlock)}

    def reference_block_order(self) -> List[str]:
        """Transformer-block paths in the official writer/reader pairing order (fixtures quirk 2)."""
        return official_reference_order(
            (path, block.norm1.normalized_shape[0]) for path, block in self.transformer_blocks().items())

    def _install_echo_processors(self) -> None:  # overridden per model
        raise NotImplementedError

    def set_default_attn_processor(self) -> None:
        """Restore the EchoMimicV2 processors (reference write/read, audio ×ratio, plain temporal).

        Every attention layer outside the spatial transformer blocks (the motion modules' temporal
        self-attention) gets a fresh :class:`SelfAttnProcessor`; the attention backend (sdpa / xformers)
        in use is kept."""
        backend = next((m.processor.backend for m in self.modules()
                        if isinstance(m, Attention) and isinstance(m.processor, _EchoProcessorBase)), "sdpa")
        self._install_echo_processors()
        spatial = {id(a) for block in self.transformer_blocks().values() for a in (block.attn1, block.attn2)}
        for m in self.modules():
            if isinstance(m, Attention) and id(m) not in spatial:
                m.set_processor(SelfAttnProcessor())
        for m in self.modules():
            if isinstance(m, Attention) and isinstance(m.processor, _EchoProcessorBase):
                m.processor.backend = backend

    @property
    def attn_processors(self) -> Dict[str, Any]:
        return {f"{name}.processor": m.processor for name, m in self.named_modules() if isinstance(m, Attention)}

    def set_attn_processor(self, processor) -> None:
        """Set processors like diffusers does (one for all, or a dict by ``<path>.processor``).

        Replacing the EchoMimicV2 processors disables the reference read / audio scaling; use
        :meth:`set_default_attn_processor` to restore them.
        """
        for name, m in self.named_modules():
            if isinstance(m, Attention):
                m.set_processor(processor[f"{name}.processor"] if isinstance(processor, dict) else processor)

    def set_use_memory_efficient_attention_xformers(self, valid: bool, attention_op=None) -> None:
        """Switch the EchoMimicV2 processors between torch SDPA (default) and xformers.

        Overrides the diffusers walk, which would replace the processors (and drop the reference
        attention) with stock xformers processors.
        """
        if valid:
            try:
                import xformers.ops  # noqa: F401
            except ImportError as exc:  # pragma: no cover - optional dependency
                raise ModuleNotFoundError("xformers is not installed; the default torch SDPA attention is "
                                          "already memory efficient", name="xformers") from exc
        for m in self.modules():
            if isinstance(m, Attention) and isinstance(m.processor, _EchoProcessorBase):
                m.processor.backend = "xformers" if valid else "sdpa"
