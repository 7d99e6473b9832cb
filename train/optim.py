"""The optimizer of a run (`optim.optimizer`): AdamW (default), AdamW with 8-bit states (bitsandbytes), or
plain SGD (the DDP equivalence test: linear in the gradient)."""

from __future__ import annotations

import torch

from echomimic_core.errors import ConfigError

OPTIMIZERS = ("adamw", "adamw8bit", "sgd")


def build_optimizer(o: dict, params: list) -> torch.optim.Optimizer:
    """`o` = the `optim` config section. adamw8bit keeps Adam's two moments in 8 bits (about 6 bytes per
    trainable parameter less than fp32 AdamW: ~10 GB for stage 1's 1.67 B parameters); bitsandbytes
    needs a CUDA GPU for it."""
    name = o.get("optimizer", "adamw")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=float(o["lr"]), betas=tuple(o["betas"]),
                                 weight_decay=float(o["weight_decay"]), eps=float(o["eps"]))
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise ImportError("optim.optimizer: adamw8bit needs bitsandbytes (pip install bitsandbytes, CUDA GPU); "
                              "use optim.optimizer: adamw otherwise") from e
        return bnb.optim.AdamW8bit(params, lr=float(o["lr"]), betas=tuple(o["betas"]),
                                   weight_decay=float(o["weight_decay"]), eps=float(o["eps"]))
    if name == "sgd":
        return torch.optim.SGD(params, lr=float(o["lr"]), weight_decay=float(o["weight_decay"]))
    raise ConfigError(f"optim.optimizer must be one of {OPTIMIZERS}, got {name!r}")
