"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric").

Written from the paper's description: images in [-1, 1] go through a fixed scaling layer, an ImageNet
feature backbone (torchvision VGG16 or AlexNet layer layout), each tapped feature map is normalised
to unit length over channels, the squared difference is weighted per channel by a learned
non-negative 1×1 "linear" head, averaged over space and summed over the taps.

Weights come from local files only (no downloads):
* backbone: a torchvision state dict (`vgg16-397923af.pth`, `alexnet-owt-7be5be79.pth`; keys
  `features.N.weight/bias`, `classifier.*` ignored) or an lpips-package style dict
  (`net.sliceK.N.weight`);
* heads: the lpips package's `weights/v0.1/{vgg,alex}.pth` (keys `lin{i}.model.1.weight`, shape
  [1, C, 1, 1]).

This is the one LPIPS of the project: the evaluation harness scores with it and the trainer's PhD loss
(`train/lpips.py` builds it from the training config) trains with it.

`RandomInitLPIPSForTests` has the same structure with seeded random weights. It exists only so CI can
run the loss without the published files; it is not a perceptual metric.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# Layer layouts of torchvision's `features` Sequential. Entries: ("conv", in, out, k, stride, pad),
# ("relu",), ("pool", k, stride). Indices are the torchvision module indices, so state-dict keys match.
_VGG16 = [
    ("conv", 3, 64, 3, 1, 1), ("relu",), ("conv", 64, 64, 3, 1, 1), ("relu",), ("pool", 2, 2),
    ("conv", 64, 128, 3, 1, 1), ("relu",), ("conv", 128, 128, 3, 1, 1), ("relu",), ("pool", 2, 2),
    ("conv", 128, 256, 3, 1, 1), ("relu",), ("conv", 256, 256, 3, 1, 1), ("relu",),
    ("conv", 256, 256, 3, 1, 1), ("relu",), ("pool", 2, 2),
    ("conv", 256, 512, 3, 1, 1), ("relu",), ("conv", 512, 512, 3, 1, 1), ("relu",),
    ("conv", 512, 512, 3, 1, 1), ("relu",), ("pool", 2, 2),
    ("conv", 512, 512, 3, 1, 1), ("relu",), ("conv", 512, 512, 3, 1, 1), ("relu",),
    ("conv", 512, 512, 3, 1, 1), ("relu",), ("pool", 2, 2),
]
# Tap after these module indices (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
_VGG16_TAPS = [3, 8, 15, 22, 29]

_ALEX = [
    ("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2),
    ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool", 3, 2),
    ("conv", 192, 384, 3, 1, 1), ("relu",),
    ("conv", 384, 256, 3, 1, 1), ("relu",),
    ("conv", 256, 256, 3, 1, 1), ("relu",), ("pool", 3, 2),
]
_ALEX_TAPS = [1, 4, 7, 9, 11]

_LAYOUTS = {"vgg": (_VGG16, _VGG16_TAPS), "alex": (_ALEX, _ALEX_TAPS)}

# The scaling layer constants (per-channel shift and scale applied to [-1, 1] inputs).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _build_features(layout, width_div: int = 1) -> tuple[nn.Sequential, list[int]]:
    mods: list[nn.Module] = []
    chans: list[int] = []
    last = 3
    for spec in layout:
        if spec[0] == "conv":
            _, cin, cout, k, s, p = spec
            cin = 3 if cin == 3 else max(1, cin // width_div)
            cout = max(1, cout // width_div)
            mods.append(nn.Conv2d(cin, cout, k, s, p))
            last = cout
        elif spec[0] == "relu":
            mods.append(nn.ReLU(inplace=False))
            chans.append(last)
        else:
            mods.append(nn.MaxPool2d(spec[1], spec[2]))
    return nn.Sequential(*mods), chans


class LPIPS(nn.Module):
    """Perceptual distance between two image batches in [-1, 1]; returns one value per sample [B]."""

    def __init__(self, net: str = "alex", *, _width_div: int = 1):
        super().__init__()
        if net not in _LAYOUTS:
            raise ValueError(f"LPIPS backbone must be one of {sorted(_LAYOUTS)}, got {net!r}")
        layout, taps = _LAYOUTS[net]
        self.net_name = net
        self.features, relu_chans = _build_features(layout, _width_div)
        relu_idx = [i for i, spec in enumerate(layout) if spec[0] == "relu"]
        self.taps = list(taps)
        tap_chans = [relu_chans[relu_idx.index(t)] for t in taps]
        # lin{i}.model.1.weight: the lpips package wraps the 1x1 conv in Sequential(Dropout, Conv).
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in tap_chans)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def from_files(cls, net: str, backbone_path: str | Path, heads_path: str | Path) -> "LPIPS":
        """Build with published weights from local files; raises FileNotFoundError with the expected names."""
        model = cls(net)
        backbone_path, heads_path = Path(backbone_path), Path(heads_path)
        for p, what in ((backbone_path, "backbone"), (heads_path, "linear heads")):
            if not p.is_file():
                hint = ("torchvision 'vgg16-397923af.pth'" if net == "vgg" else "torchvision 'alexnet-owt-7be5be79.pth'")
                raise FileNotFoundError(
                    f"LPIPS {what} file not found: {p}. Download once and point the config at it: backbone = "
                    f"{hint} (or an lpips-package net dict), heads = lpips 'weights/v0.1/{net}.pth'. "
                    "Tests may use RandomInitLPIPSForTests instead.")
        from ..checkpoints.state_dict import read_state_dict  # safe read, corrupt files named

        model.load_backbone(read_state_dict(backbone_path))
        model.load_heads(read_state_dict(heads_path))
        return model

    def load_backbone(self, state: dict) -> None:
        mapped = {}
        for k, v in state.items():
            if k.startswith("features."):
                mapped[k] = v
            elif k.startswith("net.slice"):  # lpips style: net.slice2.5.weight -> features.5.weight
                parts = k.split(".")
                mapped["features." + ".".join(parts[2:])] = v
            elif k.startswith(("classifier.", "lin")) or k in ("scaling_layer.shift", "scaling_layer.scale"):
                continue
            else:
                raise KeyError(f"unexpected key in LPIPS backbone file: {k}")
        own = self.features.state_dict()
        missing = sorted(set(own) - {k[len("features."):] for k in mapped})
        if missing:
            raise KeyError(f"LPIPS backbone file lacks {len(missing)} keys, e.g. {missing[:3]}")
        self.features.load_state_dict({k[len("features."):]: v.float() for k, v in mapped.items()}, strict=True)

    def load_heads(self, state: dict) -> None:
        for i, lin in enumerate(self.lins):
            key = next((k for k in (f"lin{i}.model.1.weight", f"lin{i}.weight", f"lins.{i}.weight") if k in state), None)
            if key is None:
                raise KeyError(f"LPIPS heads file lacks lin{i}.model.1.weight")
            lin.weight.data.copy_(state[key].float().view_as(lin.weight))

    # ---- forward -------------------------------------------------------------------------------
    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        out = []
        last = self.taps[-1]
        for i, mod in enumerate(self.features):
            x = mod(x)
            if i in self.taps:
                out.append(x)
            if i == last:
                break
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self._taps(a), self._taps(b)
        total = 0.0
        for lin, xa, xb in zip(self.lins, fa, fb):
            # eps inside the sqrt: all-zero ReLU features at a location give a finite (zero) gradient
            na = xa / (xa.pow(2).sum(1, keepdim=True) + 1e-20).sqrt()
            nb = xb / (xb.pow(2).sum(1, keepdim=True) + 1e-20).sqrt()
            total = total + lin((na - nb).pow(2)).mean(dim=(1, 2, 3))
        return total


class RandomInitLPIPSForTests(LPIPS):
    """TEST ONLY: LPIPS structure with seeded random weights (not a perceptual metric).

    Uses the AlexNet layout at 1/8 width by default to stay fast on CPU."""

    def __init__(self, net: str = "alex", seed: int = 0, width_div: int = 8):
        super().__init__(net, _width_div=width_div)
        g = torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.data.zero_()
        for lin in self.lins:
            lin.weight.data.abs_()
