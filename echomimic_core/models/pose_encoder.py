"""PoseEncoder: ControlNet-style conditioning embedder of EchoMimicV2 (``pose_encoder.pth``).

A stack of 3×3 convolutions applied to every frame separately; SiLU after each conv except
``conv_out``. Keys: ``conv_in``, ``blocks.0 … blocks.{2k-1}``, ``conv_out`` (weights and biases).
For ``block_out_channels = (c0, …, ck)``: ``conv_in`` 3→c0; for each i: ``blocks.2i`` ci→ci (stride 1),
``blocks.2i+1`` ci→c(i+1) (stride 2); ``conv_out`` ck→``conditioning_embedding_channels`` (zero-init).
Full size: ``PoseEncoder(320, 3, (16, 32, 96, 256))`` downsamples ×8 to the latent grid.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

__all__ = ["PoseEncoder"]


class PoseEncoder(ModelMixin, ConfigMixin):
    """``[b, conditioning_channels, f, H, W]`` pose images in [0, 1] → ``[b, C0, f, H/2^k, W/2^k]``.

    The output is added to the denoising UNet's ``conv_in`` output (see ``DenoisingUNet3DModel``).
    """

    @register_to_config
    def __init__(self, conditioning_embedding_channels: int = 320, conditioning_channels: int = 3,
                 block_out_channels: Sequence[int] = (16, 32, 96, 256)) -> None:
        super().__init__()
        chans = list(block_out_channels)
        self.conv_in = nn.Conv2d(conditioning_channels, chans[0], kernel_size=3, padding=1)
        blocks = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(chans[-1], conditioning_embedding_channels, kernel_size=3, padding=1)
        with torch.no_grad():
            self.conv_out.weight.zero_()
            self.conv_out.bias.zero_()

    @staticmethod
    def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict:
        """Constructor arguments read from the weight shapes of a ``pose_encoder.pth`` state dict."""
        conv_in = state_dict["conv_in.weight"].shape
        chans = [int(conv_in[0])]
        i = 1
        while f"blocks.{i}.weight" in state_dict:
            chans.append(int(state_dict[f"blocks.{i}.weight"].shape[0]))
            i += 2
        return {
            "conditioning_embedding_channels": int(state_dict["conv_out.weight"].shape[0]),
            "conditioning_channels": int(conv_in[1]),
            "block_out_channels": tuple(chans),
        }

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        """``conditioning [b, c, f, H, W]`` (or ``[b, c, H, W]`` for single images) → features."""
        single = conditioning.ndim == 4
        if single:
            conditioning = conditioning.unsqueeze(2)
        f = conditioning.shape[2]
        x = rearrange(conditioning, "b c f h w -> (b f) c h w")
        x = F.silu(self.conv_in(x))
        for block in self.blocks:
            x = F.silu(block(x))
        x = self.conv_out(x)
        x = rearrange(x, "(b f) c h w -> b c f h w", f=f)
        return x[:, :, 0] if single else x
