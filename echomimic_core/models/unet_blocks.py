"""UNet levels shared by the ReferenceNet (2-D) and the denoising UNet (3-D, frames folded into batch).

EchoMimicV2's 3-D UNet uses "inflated" convolutions and GroupNorms (``use_inflated_groupnorm``): every
op except the motion modules is the 2-D op applied to each frame. So both UNets run on
``[(b f), C, h, w]`` tensors built from diffusers' 2-D blocks (``ResnetBlock2D``, ``Transformer2DModel``,
``Downsample2D``, ``Upsample2D``), with ``f = 1`` for the ReferenceNet; the motion modules
(``[(b f), C, h, w]`` + ``num_frames``) are the only modules that mix frames. The time embedding
(one per batch element) is repeated per frame, which equals the official broadcast over frames.

Module names equal the official state-dict keys: ``resnets.j``, ``attentions.j``,
``motion_modules.j``, ``downsamplers.0.conv``, ``upsamplers.0.conv``. Order inside a layer:
ResNet → spatial transformer → motion module (mid block: ResNet, then [transformer → motion module →
ResNet]).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.utils.checkpoint
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.upsampling import Upsample2D
from torch import nn

from .feed_forward import RowChunkedFeedForward
from .motion_module import get_motion_module

__all__ = ["EchoDownBlock", "EchoMidBlock", "EchoUpBlock"]


def _maybe_checkpoint(owner: nn.Module, fn, *args):
    """Run ``fn(*args)``, through activation checkpointing when the owner has it enabled
    (diffusers' ``enable_gradient_checkpointing`` sets ``gradient_checkpointing`` and, in recent
    versions, ``_gradient_checkpointing_func``)."""
    if getattr(owner, "gradient_checkpointing", False) and torch.is_grad_enabled():
        func = getattr(owner, "_gradient_checkpointing_func", None)
        if func is None or func is torch.utils.checkpoint.checkpoint:
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
        return func(fn, *args)
    return fn(*args)


def _resnet(in_channels: int, out_channels: int, temb_channels: int, eps: float, groups: int, act_fn: str,
            dropout: float, output_scale_factor: float, time_scale_shift: str) -> ResnetBlock2D:
    return ResnetBlock2D(in_channels=in_channels, out_channels=out_channels, temb_channels=temb_channels,
                         eps=eps, groups=groups, dropout=dropout, time_embedding_norm=time_scale_shift,
                         non_linearity=act_fn, output_scale_factor=output_scale_factor, pre_norm=True)


def _transformer(channels: int, heads: int, cross_attention_dim: Optional[int], groups: int,
                 use_linear_projection: bool, upcast_attention: bool) -> Transformer2DModel:
    # cross_attention_dim None -> blocks without attn2/norm2 (the ReferenceNet's blocks)
    model = Transformer2DModel(num_attention_heads=heads, attention_head_dim=channels // heads,
                               in_channels=channels, num_layers=1, cross_attention_dim=cross_attention_dim,
                               norm_num_groups=groups, use_linear_projection=use_linear_projection,
                               upcast_attention=upcast_attention)
    for block in model.transformer_blocks:
        block.ff = RowChunkedFeedForward(block.ff)  # same keys; cache-sized chunks on the CPU (feed_forward.py)
    return model


class _LevelBase(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gradient_checkpointing = False

    def spatial(self, i: int, hidden_states: torch.Tensor, temb: torch.Tensor,
                encoder_hidden_states: Optional[torch.Tensor], cross_attention_kwargs: Optional[Dict[str, Any]],
                resnet: bool = True) -> torch.Tensor:
        """The frame-local part of layer ``i``: ResNet → spatial transformer, each frame on its own."""
        if resnet:
            hidden_states = _maybe_checkpoint(self, self.resnets[i], hidden_states, temb)
        if self.attentions is not None:
            # Transformer2DModel checkpoints its own blocks when enabled
            hidden_states = self.attentions[i](hidden_states, encoder_hidden_states=encoder_hidden_states,
                                               cross_attention_kwargs=cross_attention_kwargs,
                                               return_dict=False)[0]
        return hidden_states

    def _layer(self, i: int, hidden_states: torch.Tensor, temb: torch.Tensor, num_frames: int,
               encoder_hidden_states: Optional[torch.Tensor], cross_attention_kwargs: Optional[Dict[str, Any]],
               resnet: bool = True, spatial_done: bool = False) -> torch.Tensor:
        """Layer ``i``; ``spatial_done``: ``hidden_states`` is already :meth:`spatial`'s output."""
        if not spatial_done:
            hidden_states = self.spatial(i, hidden_states, temb, encoder_hidden_states, cross_attention_kwargs,
                                         resnet)
        if self.motion_modules is not None:
            hidden_states = _maybe_checkpoint(self, self.motion_modules[i], hidden_states, num_frames)
        return hidden_states


class EchoDownBlock(_LevelBase):
    """One encoder level: ``num_layers`` × [ResNet → (transformer) → (motion module)] + optional downsample.

    ``hidden_states [(b f), C_in, h, w] -> ([(b f), C_out, h', w'], skip tuple)``.
    ``num_attention_heads`` None: no transformers (``DownBlock``); ``motion_module_type`` None: no motion
    modules (ReferenceNet); ``cross_attention_dim`` None: transformer blocks without ``attn2``.
    """

    def __init__(self, *, in_channels: int, out_channels: int, temb_channels: int, num_layers: int,
                 resnet_eps: float, resnet_groups: int, resnet_act_fn: str, add_downsample: bool,
                 downsample_padding: int = 1, num_attention_heads: Optional[int] = None,
                 cross_attention_dim: Optional[int] = None, use_linear_projection: bool = False,
                 upcast_attention: bool = False, motion_module_type: Optional[str] = None,
                 motion_module_kwargs: Optional[dict] = None, dropout: float = 0.0,
                 resnet_time_scale_shift: str = "default") -> None:
        super().__init__()
        self.resnets = nn.ModuleList([
            _resnet(in_channels if i == 0 else out_channels, out_channels, temb_channels, resnet_eps, resnet_groups,
                    resnet_act_fn, dropout, 1.0, resnet_time_scale_shift) for i in range(num_layers)])
        self.attentions = None if num_attention_heads is None else nn.ModuleList([
            _transformer(out_channels, num_attention_heads, cross_attention_dim, resnet_groups,
                         use_linear_projection, upcast_attention) for _ in range(num_layers)])
        self.motion_modules = None if motion_module_type is None else nn.ModuleList([
            get_motion_module(out_channels, motion_module_type, motion_module_kwargs) for _ in range(num_layers)])
        self.downsamplers = None if not add_downsample else nn.ModuleList([
            Downsample2D(out_channels, use_conv=True, out_channels=out_channels, padding=downsample_padding,
                         name="op")])

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor, num_frames: int = 1,
                encoder_hidden_states: Optional[torch.Tensor] = None,
                cross_attention_kwargs: Optional[Dict[str, Any]] = None,
                head: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """``head``: layer 0's :meth:`spatial` output, computed beforehand (then ``hidden_states`` is unused)."""
        skips = ()
        for i in range(len(self.resnets)):
            done = i == 0 and head is not None
            hidden_states = self._layer(i, head if done else hidden_states, temb, num_frames, encoder_hidden_states,
                                        cross_attention_kwargs, spatial_done=done)
            skips += (hidden_states,)
        if self.downsamplers is not None:
            for down in self.downsamplers:
                hidden_states = down(hidden_states)
            skips += (hidden_states,)
        return hidden_states, skips


class EchoMidBlock(_LevelBase):
    """ResNet → ``num_layers`` × [transformer → (motion module) → ResNet]; ``[(b f), C, h, w]`` in and out."""

    def __init__(self, *, in_channels: int, temb_channels: int, resnet_eps: float, resnet_groups: int,
                 resnet_act_fn: str, num_attention_heads: int, cross_attention_dim: Optional[int] = None,
                 output_scale_factor: float = 1.0, use_linear_projection: bool = False,
                 upcast_attention: bool = False, motion_module_type: Optional[str] = None,
                 motion_module_kwargs: Optional[dict] = None, num_layers: int = 1, dropout: float = 0.0,
                 resnet_time_scale_shift: str = "default") -> None:
        super().__init__()
        self.resnets = nn.ModuleList([
            _resnet(in_channels, in_channels, temb_channels, resnet_eps, resnet_groups, resnet_act_fn, dropout,
                    output_scale_factor, resnet_time_scale_shift) for _ in range(num_layers + 1)])
        self.attentions = nn.ModuleList([
            _transformer(in_channels, num_attention_heads, cross_attention_dim, resnet_groups,
                         use_linear_projection, upcast_attention) for _ in range(num_layers)])
        self.motion_modules = None if motion_module_type is None else nn.ModuleList([
            get_motion_module(in_channels, motion_module_type, motion_module_kwargs) for _ in range(num_layers)])

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor, num_frames: int = 1,
                encoder_hidden_states: Optional[torch.Tensor] = None,
                cross_attention_kwargs: Optional[Dict[str, Any]] = None) -> torch.Tensor:
        hidden_states = _maybe_checkpoint(self, self.resnets[0], hidden_states, temb)
        for i in range(len(self.attentions)):
            hidden_states = self._layer(i, hidden_states, temb, num_frames, encoder_hidden_states,
                                        cross_attention_kwargs, resnet=False)
            hidden_states = _maybe_checkpoint(self, self.resnets[i + 1], hidden_states, temb)
        return hidden_states


class EchoUpBlock(_LevelBase):
    """One decoder level: ``num_layers`` × [concat skip → ResNet → (transformer) → (motion module)]
    + optional nearest-×2 upsample and 3×3 conv. ``[(b f), C, h, w] -> [(b f), C_out, 2h, 2w]``."""

    def __init__(self, *, in_channels: int, prev_output_channel: int, out_channels: int, temb_channels: int,
                 num_layers: int, resnet_eps: float, resnet_groups: int, resnet_act_fn: str, add_upsample: bool,
                 num_attention_heads: Optional[int] = None, cross_attention_dim: Optional[int] = None,
                 use_linear_projection: bool = False, upcast_attention: bool = False,
                 motion_module_type: Optional[str] = None, motion_module_kwargs: Optional[dict] = None,
                 dropout: float = 0.0, resnet_time_scale_shift: str = "default") -> None:
        super().__init__()
        resnets = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in = prev_output_channel if i == 0 else out_channels
            resnets.append(_resnet(resnet_in + skip_channels, out_channels, temb_channels, resnet_eps,
                                   resnet_groups, resnet_act_fn, dropout, 1.0, resnet_time_scale_shift))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = None if num_attention_heads is None else nn.ModuleList([
            _transformer(out_channels, num_attention_heads, cross_attention_dim, resnet_groups,
                         use_linear_projection, upcast_attention) for _ in range(num_layers)])
        self.motion_modules = None if motion_module_type is None else nn.ModuleList([
            get_motion_module(out_channels, motion_module_type, motion_module_kwargs) for _ in range(num_layers)])
        self.upsamplers = None if not add_upsample else nn.ModuleList([
            Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])

    def forward(self, hidden_states: torch.Tensor, skips: Tuple[torch.Tensor, ...], temb: torch.Tensor,
                num_frames: int = 1, encoder_hidden_states: Optional[torch.Tensor] = None,
                cross_attention_kwargs: Optional[Dict[str, Any]] = None,
                upsample_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        for i in range(len(self.resnets)):
            skip = skips[-1]
            skips = skips[:-1]
            hidden_states = torch.cat([hidden_states, skip], dim=1)
            hidden_states = self._layer(i, hidden_states, temb, num_frames, encoder_hidden_states,
                                        cross_attention_kwargs)
        if self.upsamplers is not None:
            for up in self.upsamplers:
                hidden_states = up(hidden_states, upsample_size)
        return hidden_states
