"""Expression coefficients for E-FID: the Deep3DFaceRecon coefficient regressor (Deng et al. 2019, the
paper's [7]), a ResNet-50 with seven 1x1 heads, written so that its ``epoch_20.pth`` loads key-for-key.

Why by hand: torchvision is not a dependency of this pack. Layout (the ``net_recon`` entry of
Deep3DFaceRecon_pytorch's checkpoint): ``backbone.*`` is torchvision's ResNet-50 without ``fc``
(``conv1``, ``bn1``, ``layer1..4.<i>.{conv1,bn1,conv2,bn2,conv3,bn3,downsample.0,downsample.1}``,
stride on the 3x3 convolution), ``final_layers.{0..6}.{weight,bias}`` are 1x1 convolutions
2048 -> (80 identity, 64 expression, 80 texture, 3 angles, 27 lighting, 2 + 1 translation).

Input: aligned 224x224 RGB face crops in [0, 1]; :meth:`Deep3DRecon.expression` returns the 64
expression coefficients ``[n, 64]`` whose Fréchet distance is E-FID.
"""

from __future__ import annotations

import torch
from torch import nn

HEADS = (80, 64, 80, 3, 27, 2, 1)
EXPRESSION = slice(80, 144)
INPUT_SIZE = 224


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: bool = False):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out)) if downsample else None

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50Features(nn.Module):
    """ResNet-50 trunk -> ``[n, 2048, 1, 1]`` (global average pool). ``width`` scales channels (tests)."""

    def __init__(self, blocks=(3, 4, 6, 3), width: float = 1.0):
        super().__init__()
        base = max(1, int(round(64 * width)))
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = base
        for i, n in enumerate(blocks):
            planes = base * 2 ** i
            layers = []
            for j in range(n):
                stride = 2 if (j == 0 and i > 0) else 1
                layers.append(Bottleneck(cin, planes, stride, downsample=(j == 0)))
                cin = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.out_dim = cin

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x.mean(dim=(2, 3), keepdim=True)


class Deep3DRecon(nn.Module):
    """``[n, 3, 224, 224]`` RGB in [0, 1] -> ``[n, 257]`` coefficients (see the module docstring)."""

    def __init__(self, width: float = 1.0, blocks=(3, 4, 6, 3)):
        super().__init__()
        self.backbone = ResNet50Features(blocks, width)
        self.final_layers = nn.ModuleList(nn.Conv2d(self.backbone.out_dim, c, 1, bias=True) for c in HEADS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        return torch.cat([head(f) for head in self.final_layers], 1).flatten(1)

    def expression(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)[:, EXPRESSION]
