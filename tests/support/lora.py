"""Helpers of the LoRA tests: a deterministic denoiser prediction and a random LoRA for a model set."""

from __future__ import annotations

import torch

from echomimic_core.lora import LoraMetadata, LoraWeights, fingerprint
from echomimic_core.lora.fileformat import dtype_name


def predict(models, seed: int = 0) -> torch.Tensor:
    """One denoiser v-prediction [1, 4, 2, 8, 8] through the reference pass and the pose encoder."""
    from train.modeling import TrainNet

    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(1, 4, 8, 8, generator=g)
    z = torch.randn(1, 4, 2, 8, 8, generator=g)
    audio = torch.randn(1, 2, 5, 384, generator=g)
    pose = torch.rand(1, 3, 2, 64, 64, generator=g)
    net = TrainNet(models.reference_unet, models.denoising_unet, models.pose_encoder).eval()
    keep = torch.tensor([True])
    with torch.no_grad():
        return net(ref, z, torch.tensor([500]), audio, pose, keep, keep)


def random_lora(models, seed: int, rank: int = 2, alpha: float = 4.0, scale_b: float = 0.2,
                extra: tuple = ("proj_in", "conv_in")) -> LoraWeights:
    """A LoRA on the attention projections of both UNets (+ 1x1/3x3 convs) with random A and B."""
    from train.lora_setup import DEFAULTS, target_modules

    g = torch.Generator().manual_seed(seed)
    lc = dict(DEFAULTS, extra_modules=list(extra))
    modules = {}
    for net in ("denoising_unet", "reference_unet"):
        mod = getattr(models, net)
        for name in target_modules(net, mod, lc):
            w = mod.get_submodule(name).weight
            if w.ndim == 2:
                a, b = torch.randn(rank, w.shape[1], generator=g), torch.randn(w.shape[0], rank, generator=g)
            else:
                a = torch.randn(rank, w.shape[1], *w.shape[2:], generator=g)
                b = torch.randn(w.shape[0], rank, 1, 1, generator=g)
            modules[(net, name)] = (a * 0.3, b * scale_b)
    base = fingerprint(models)
    meta = LoraMetadata(base.hash, base.structure, rank, alpha, base_dtype=dtype_name(base.dtype),
                        base_model="fixture", targets={"test": True})
    return LoraWeights(meta, modules, base)
