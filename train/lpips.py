"""LPIPS for the trainer's PhD loss: the network is the library's (``echomimic_core.eval.lpips``, shared
with the evaluation harness); this module builds it from the training config."""

from __future__ import annotations

from echomimic_core.eval.lpips import LPIPS, RandomInitLPIPSForTests

__all__ = ["LPIPS", "RandomInitLPIPSForTests", "build_lpips"]


def build_lpips(cfg: dict) -> LPIPS:
    """From the loss config: {net, backbone, heads} or {net: 'random_init_for_tests'}."""
    net = cfg.get("net", "alex")
    if net == "random_init_for_tests":
        return RandomInitLPIPSForTests()
    if not cfg.get("backbone") or not cfg.get("heads"):
        raise FileNotFoundError(
            "losses.lpips needs local weight files: set losses.lpips.backbone (torchvision "
            f"{'vgg16' if net == 'vgg' else 'alexnet'} state dict) and losses.lpips.heads (lpips v0.1 "
            f"{net}.pth), or disable the LPIPS term (losses.phd.lpips_weight: 0). For CI only: net: random_init_for_tests")
    return LPIPS.from_files(net, cfg["backbone"], cfg["heads"])
