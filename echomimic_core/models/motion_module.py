"""AnimateDiff "Vanilla" motion module, weight-compatible with EchoMimicV2's ``motion_module.pth``.

Written by hand because the key layout differs from diffusers' AnimateDiff port
(``unet_motion_model``): EchoMimicV2 (like AnimateDiff v1/v2) names the attention layers
``attention_blocks.{i}``/``norms.{i}`` and keeps the sinusoidal position table as a persistent buffer
``attention_blocks.{i}.pos_encoder.pe`` inside each attention layer. The building blocks are diffusers'
(``Attention``, ``FeedForward``).

Per insertion point with ``C`` channels, state-dict keys (relative to ``motion_modules.j``)::

    temporal_transformer.norm.{weight,bias}                     GroupNorm(32, C, eps 1e-6)
    temporal_transformer.proj_in.{weight,bias}                  Linear C → C
    temporal_transformer.transformer_blocks.0.attention_blocks.{0,1}.{to_q,to_k,to_v}.weight
    temporal_transformer.transformer_blocks.0.attention_blocks.{0,1}.to_out.0.{weight,bias}
    temporal_transformer.transformer_blocks.0.attention_blocks.{0,1}.pos_encoder.pe   [1, max_len, C]
    temporal_transformer.transformer_blocks.0.norms.{0,1}.{weight,bias}
    temporal_transformer.transformer_blocks.0.ff.net.0.proj.{weight,bias}           GEGLU C → 8C
    temporal_transformer.transformer_blocks.0.ff.net.2.{weight,bias}                4C → C
    temporal_transformer.transformer_blocks.0.ff_norm.{weight,bias}
    temporal_transformer.proj_out.{weight,bias}                 Linear C → C (zero-initialised)
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn

from ..errors import CheckpointError, ConfigError, InputError
from .attention import SelfAttnProcessor
from .feed_forward import RowChunkedFeedForward

__all__ = ["SinusoidalPositionTable", "TemporalSelfAttention", "TemporalTransformerBlock",
           "TemporalTransformer3DModel", "VanillaTemporalModule", "get_motion_module", "MotionModules"]


class SinusoidalPositionTable(nn.Module):
    """Adds the standard sinusoidal table (sin on even, cos on odd channels, base 10000) along the
    frame axis: ``[N, f, C] -> [N, f, C]`` with ``f <= max_len``. The table is a persistent buffer
    ``pe`` ``[1, max_len, C]`` (it is in the official checkpoints)."""

    def __init__(self, dim: int, max_len: int = 32) -> None:
        super().__init__()
        self.register_buffer("pe", self.table(dim, max_len), persistent=True)

    @staticmethod
    def table(dim: int, max_len: int, device=None) -> torch.Tensor:
        position = torch.arange(max_len, device=device, dtype=torch.float32).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32)
                             * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim, device=device)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        return pe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.shape[1]
        if f > self.pe.shape[1]:
            raise InputError(f"a context window of {f} frames is longer than the motion module's position "
                             f"table ({self.pe.shape[1]} frames); use at most {self.pe.shape[1]} frames per window")
        return x + self.pe[:, :f].to(x.dtype)


class TemporalSelfAttention(Attention):
    """Self-attention across the frames of each spatial position, with the position table added to
    its input first.

    A subclass of diffusers ``Attention`` (so ``to_q/to_k/to_v/to_out.0`` keep their names) that also
    owns ``pos_encoder`` — the one structural difference from a diffusers attention layer. Its forward
    takes tokens in the UNet layout ``[(b f), n, C]`` and ``num_frames``.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, position_encoding: bool = True,
                 max_len: int = 32, dropout: float = 0.0, bias: bool = False,
                 upcast_attention: bool = False) -> None:
        super().__init__(query_dim=dim, heads=heads, dim_head=dim_head, dropout=dropout, bias=bias,
                         upcast_attention=upcast_attention, processor=SelfAttnProcessor())
        self.pos_encoder = SinusoidalPositionTable(dim, max_len) if position_encoding else None

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:  # type: ignore[override]
        """``[(b f), n, C] -> [(b f), n, C]``, attention over ``f`` for every ``(b, n)``."""
        n = hidden_states.shape[1]
        x = rearrange(hidden_states, "(b f) n c -> (b n) f c", f=num_frames)
        if self.pos_encoder is not None:
            x = self.pos_encoder(x)
        x = self.processor(self, x)
        return rearrange(x, "(b n) f c -> (b f) n c", n=n)


class TemporalTransformerBlock(nn.Module):
    """``for k: x = attention_blocks[k](norms[k](x)) + x``; then ``x = ff(ff_norm(x)) + x`` (GEGLU)."""

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int,
                 attention_block_types: Sequence[str] = ("Temporal_Self", "Temporal_Self"),
                 temporal_position_encoding: bool = False, temporal_position_encoding_max_len: int = 24,
                 dropout: float = 0.0, activation_fn: str = "geglu", attention_bias: bool = False,
                 upcast_attention: bool = False) -> None:
        super().__init__()
        for kind in attention_block_types:
            if kind != "Temporal_Self":
                raise ConfigError(f"motion-module attention type {kind!r} is not supported (EchoMimicV2 uses "
                                 f"Temporal_Self only)")
        self.attention_blocks = nn.ModuleList([
            TemporalSelfAttention(dim, num_attention_heads, attention_head_dim,
                                  position_encoding=temporal_position_encoding,
                                  max_len=temporal_position_encoding_max_len, dropout=dropout,
                                  bias=attention_bias, upcast_attention=upcast_attention)
            for _ in attention_block_types])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in attention_block_types])
        self.ff = RowChunkedFeedForward(FeedForward(dim, dropout=dropout, activation_fn=activation_fn))
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            hidden_states = attention(norm(hidden_states), num_frames) + hidden_states
        return self.ff(self.ff_norm(hidden_states)) + hidden_states


class TemporalTransformer3DModel(nn.Module):
    """GroupNorm → Linear proj_in → temporal blocks → Linear proj_out → + residual.

    Input/output ``[(b f), C, h, w]`` (the UNet keeps frames folded into the batch axis).
    """

    def __init__(self, in_channels: int, num_attention_heads: int, attention_head_dim: int,
                 num_layers: int = 1, attention_block_types: Sequence[str] = ("Temporal_Self", "Temporal_Self"),
                 norm_num_groups: int = 32, temporal_position_encoding: bool = False,
                 temporal_position_encoding_max_len: int = 24, dropout: float = 0.0,
                 activation_fn: str = "geglu", attention_bias: bool = False,
                 upcast_attention: bool = False) -> None:
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        self.norm = nn.GroupNorm(num_groups=norm_num_groups, num_channels=in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList([
            TemporalTransformerBlock(inner_dim, num_attention_heads, attention_head_dim,
                                     attention_block_types=attention_block_types,
                                     temporal_position_encoding=temporal_position_encoding,
                                     temporal_position_encoding_max_len=temporal_position_encoding_max_len,
                                     dropout=dropout, activation_fn=activation_fn,
                                     attention_bias=attention_bias, upcast_attention=upcast_attention)
            for _ in range(num_layers)])
        self.proj_out = nn.Linear(inner_dim, in_channels)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        residual = hidden_states
        _, _, h, w = hidden_states.shape
        x = self.norm(hidden_states)
        x = rearrange(x, "n c h w -> n (h w) c")
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, num_frames)
        x = self.proj_out(x)
        x = rearrange(x, "n (h w) c -> n c h w", h=h, w=w)
        return x + residual


class VanillaTemporalModule(nn.Module):
    """AnimateDiff "Vanilla" motion module: ``[(b f), C, h, w] -> [(b f), C, h, w]``, mixing frames only.

    Args mirror the official ``motion_module_kwargs`` (``num_attention_heads``, ``num_transformer_block``,
    ``attention_block_types``, ``temporal_position_encoding``, ``temporal_position_encoding_max_len``,
    ``temporal_attention_dim_div``); head dim = ``C // heads // dim_div``. ``proj_out`` is
    zero-initialised (so a fresh module is the identity), as in the official class.
    """

    def __init__(self, in_channels: int, num_attention_heads: int = 8, num_transformer_block: int = 2,
                 attention_block_types: Sequence[str] = ("Temporal_Self", "Temporal_Self"),
                 cross_frame_attention_mode: Optional[str] = None, temporal_position_encoding: bool = False,
                 temporal_position_encoding_max_len: int = 24, temporal_attention_dim_div: int = 1,
                 zero_initialize: bool = True) -> None:
        super().__init__()
        if cross_frame_attention_mode is not None:
            raise ConfigError("cross_frame_attention_mode is not supported")
        self.temporal_transformer = TemporalTransformer3DModel(
            in_channels=in_channels, num_attention_heads=num_attention_heads,
            attention_head_dim=in_channels // num_attention_heads // temporal_attention_dim_div,
            num_layers=num_transformer_block, attention_block_types=attention_block_types,
            temporal_position_encoding=temporal_position_encoding,
            temporal_position_encoding_max_len=temporal_position_encoding_max_len)
        if zero_initialize:
            with torch.no_grad():
                for p in self.temporal_transformer.proj_out.parameters():
                    p.zero_()

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.temporal_transformer(hidden_states, num_frames)


def get_motion_module(in_channels: int, motion_module_type: str, motion_module_kwargs: dict) -> nn.Module:
    if motion_module_type != "Vanilla":
        raise ConfigError(f"motion_module_type {motion_module_type!r} is not supported (only 'Vanilla')")
    return VanillaTemporalModule(in_channels=in_channels, **dict(motion_module_kwargs or {}))


class MotionModules(nn.Module):
    """The motion modules of a denoiser as a model of their own (the role of diffusers' ``MotionAdapter``).

    Its ``state_dict()`` has exactly the keys of ``motion_module.pth`` (``down_blocks.i.motion_modules.j…``,
    ``mid_block.motion_modules.0…``, ``up_blocks.i.motion_modules.j…``), so one motion file can be loaded
    on its own and swapped into a loaded denoiser with :meth:`apply_to` without rebuilding or reloading the
    spatial UNet. Written by hand because EchoMimicV2's motion modules live inside its own block classes,
    not in diffusers' ``UNetMotionModel`` layout.

    Args:
        lists: block path (``"down_blocks.0"``, ``"mid_block"`` …) → that block's ``motion_modules``
            ``ModuleList``. The modules are held, not copied.
    """

    def __init__(self, lists: Mapping[str, nn.ModuleList]) -> None:
        super().__init__()
        self.block_paths = list(lists)
        for path, modules in lists.items():
            parent = self
            for part in path.split("."):
                if not hasattr(parent, part):
                    parent.add_module(part, nn.Module())
                parent = getattr(parent, part)
            parent.add_module("motion_modules", modules)

    @staticmethod
    def lists_of(denoiser: nn.Module) -> Dict[str, nn.ModuleList]:
        """``{block path: motion_modules ModuleList}`` of a denoiser (blocks without motion modules skipped)."""
        return {name: getattr(m, "motion_modules") for name, m in denoiser.named_modules()
                if isinstance(getattr(m, "motion_modules", None), nn.ModuleList)}

    @classmethod
    def from_denoiser(cls, denoiser: nn.Module) -> "MotionModules":
        """A view of ``denoiser``'s current motion modules (shares the modules)."""
        return cls(cls.lists_of(denoiser))

    def apply_to(self, denoiser: nn.Module) -> "MotionModules":
        """Install these motion modules into ``denoiser`` in place; returns the ones it had (to swap back).

        The denoiser must have the same insertion points and shapes (same config). The attention backend
        (sdpa / xformers) of the replaced modules is kept."""
        old = self.lists_of(denoiser)
        own = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in MotionModules(old).state_dict().items()}
        if own != theirs:
            diff = sorted(set(own) ^ set(theirs)) or [k for k in own if own[k] != theirs[k]]
            raise CheckpointError(f"these motion modules do not fit the denoiser (first differing keys: {diff[:3]})")
        backend = next((getattr(m.processor, "backend", None) for lst in old.values() for m in lst.modules()
                        if isinstance(m, Attention)), None)
        for path in self.block_paths:
            block = denoiser.get_submodule(path)
            block.motion_modules = self.get_submodule(path).motion_modules
        if backend is not None:
            for m in self.modules():
                if isinstance(m, Attention) and hasattr(m.processor, "backend"):
                    m.processor.backend = backend
        return MotionModules(old)
