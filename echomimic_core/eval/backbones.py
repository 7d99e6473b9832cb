"""Building the metric backbones: from the user's local files, or thin random copies for tests.

Which backbone each metric needs (file names and sources: :data:`.weights.BACKBONES`):

=========  =====================  ======================================================
metric     backbone kind          network
=========  =====================  ======================================================
fid        inception              :class:`.inception.FIDInceptionV3` (pool3, 2048-d)
fvd        i3d                    :class:`.i3d.InceptionI3d` (400 logits)
lpips      lpips_net + lpips_heads :class:`.lpips.LPIPS` (AlexNet, v0.1 heads)
csim       arcface                :class:`.face.ArcFaceONNX` (onnxruntime)
efid       deep3d                 :class:`.deep3d.Deep3DRecon` (64 expression coefficients)
sync_c/d   syncnet                :class:`.syncnet.SyncNet`
=========  =====================  ======================================================

``random_backbone_for_tests(kind)`` returns the same architectures at a fraction of the width with
seeded random weights (BatchNorm statistics left at 0 / 1). They exercise every code path of the
metrics but their numbers mean nothing; results computed with them are flagged ``test_backbones``.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import torch
from torch import nn

from .weights import find_weight, load_exact, load_state_dict

METRIC_BACKBONES: dict[str, tuple[str, ...]] = {
    "fid": ("inception",), "fvd": ("i3d",), "lpips": ("lpips_net", "lpips_heads"), "csim": ("arcface",),
    "efid": ("deep3d",), "sync_c": ("syncnet",), "sync_d": ("syncnet",),
}
MODEL_KINDS = ("inception", "i3d", "lpips", "arcface", "deep3d", "syncnet")


def files_for(metric: str, weights_dir=None, overrides: Mapping[str, str] | None = None) -> dict[str, os.PathLike]:
    """Resolve (and so check, before any heavy work) the files one metric needs."""
    return {kind: find_weight(kind, weights_dir, overrides, metric) for kind in METRIC_BACKBONES.get(metric, ())}


def load_backbone(kind: str, files: Mapping[str, os.PathLike], device="cpu"):
    """The real network of ``kind`` (one of :data:`MODEL_KINDS`) from resolved ``files``."""
    if kind == "inception":
        from .inception import FIDInceptionV3

        path = files["inception"]
        net = load_exact(FIDInceptionV3(), load_state_dict(path), str(path), ignore_prefixes=("fc.", "AuxLogits."))
    elif kind == "i3d":
        from .i3d import InceptionI3d

        path = files["i3d"]
        net = load_exact(InceptionI3d(), load_state_dict(path), str(path))
    elif kind == "lpips":
        from .lpips import LPIPS

        net = LPIPS.from_files("alex", files["lpips_net"], files["lpips_heads"])
    elif kind == "arcface":
        from .face import ArcFaceONNX

        return ArcFaceONNX(files["arcface"])
    elif kind == "deep3d":
        from .deep3d import Deep3DRecon

        path = files["deep3d"]
        net = load_exact(Deep3DRecon(), load_state_dict(path, subkey="net_recon"), str(path))
    elif kind == "syncnet":
        from .syncnet import SyncNet

        path = files["syncnet"]
        net = load_exact(SyncNet(), load_state_dict(path), str(path))
    else:
        raise KeyError(kind)
    return net.to(device).eval()


class RandomArcFaceForTests:
    """TEST ONLY: a fixed random projection of the 112x112 crop standing in for ArcFace."""

    size = 112

    def __init__(self, seed: int = 0, dim: int = 32):
        g = np.random.default_rng(seed)
        self.proj = g.standard_normal((3 * 16 * 16, dim))

    def embed(self, faces: np.ndarray) -> np.ndarray:
        import cv2

        small = np.stack([cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA) for f in faces]).astype(np.float64)
        out = ((small - 127.5) / 127.5).reshape(len(faces), -1) @ self.proj
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _randomize(net: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.data.zero_()
    net.for_tests = True  # results computed with it are flagged test_backbones
    return net.eval().requires_grad_(False)


def random_backbone_for_tests(kind: str, seed: int = 0):
    """TEST ONLY: thin random copies of the real architectures (see the module docstring)."""
    if kind == "inception":
        from .inception import FIDInceptionV3

        return _randomize(FIDInceptionV3(width=1 / 16), seed)
    if kind == "i3d":
        from .i3d import InceptionI3d

        return _randomize(InceptionI3d(num_classes=24, width=1 / 16), seed)
    if kind == "lpips":
        from .lpips import RandomInitLPIPSForTests

        return RandomInitLPIPSForTests(seed=seed)
    if kind == "arcface":
        return RandomArcFaceForTests(seed)
    if kind == "deep3d":
        from .deep3d import Deep3DRecon

        return _randomize(Deep3DRecon(width=1 / 16, blocks=(1, 1, 1, 1)), seed)
    if kind == "syncnet":
        from .syncnet import SyncNet

        return _randomize(SyncNet(width=1 / 16), seed)
    raise KeyError(kind)
