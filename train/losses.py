"""Losses: the latent v-loss and the Phase-specific Denoising (PhD) loss of EchoMimicV2.

PhD (paper §3.4, TRAINING.md §3): timesteps are split by their position in the *denoising* order
(t = T-1 first). For each sample, by its own t:
  * first 10 % (t ≥ 0.9·T)          pose-dominant    λ·MSE(M_p(Î0), M_p(I))
  * next 60 %  (0.3·T ≤ t < 0.9·T)  detail-dominant  λ·MSE(Canny(Î0), Canny(I))   (soft, differentiable)
  * last 30 %  (t < 0.3·T)          quality-dominant λ·LPIPS(Î0, I)
Î0 is the one-step estimate from the v prediction, decoded by the (frozen) VAE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from echomimic_core.errors import ConfigError, ModelFilesNotFoundError

PHASES = ("pose", "detail", "low")
POSE_BACKBONES = ("pose_encoder", "dwpose_onnx:<file>", "torchscript:<file>", "random_init_for_tests")
POSE_COMPARE = ("simcc", "coords")  # how dwpose_onnx keypoint maps are compared (train/pose_keypoints.py)


# ------------------------------------------------------------------------------------------------
# timestep phases


def phd_phase_of(t: torch.Tensor, num_train_timesteps: int = 1000,
                 bounds: tuple[float, float] = (0.9, 0.3)) -> torch.Tensor:
    """Per-sample phase index: 0 pose (early, t ≥ 0.9T), 1 detail (middle), 2 low/LPIPS (final, t < 0.3T)."""
    hi = int(round(bounds[0] * num_train_timesteps))
    lo = int(round(bounds[1] * num_train_timesteps))
    phase = torch.ones_like(t, dtype=torch.long)
    phase[t >= hi] = 0
    phase[t < lo] = 2
    return phase


def predict_x0_from_v(z_t: torch.Tensor, v: torch.Tensor, alphas_cumprod: torch.Tensor,
                      t: torch.Tensor) -> torch.Tensor:
    """ẑ0 = sqrt(ᾱ_t)·z_t − sqrt(1−ᾱ_t)·v (v-prediction). t: [B]; z_t, v: [B, C, ...]."""
    a = alphas_cumprod.to(device=z_t.device, dtype=torch.float32)[t.long()]
    shape = (-1,) + (1,) * (z_t.ndim - 1)
    sa = a.sqrt().view(shape).to(z_t.dtype)
    sb = (1 - a).sqrt().view(shape).to(z_t.dtype)
    return sa * z_t - sb * v


# ------------------------------------------------------------------------------------------------
# soft differentiable Canny


def _gauss_kernel(sigma: float, radius: int, device, dtype) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return k / k.sum()


class SoftCanny(nn.Module):
    """Differentiable Canny-like edge map in [0, 1] for images in [-1, 1] ([B, 3, H, W] → [B, 1, H, W]).

    Gaussian blur → Sobel gradients → magnitude → soft non-maximum suppression along the gradient
    direction (the magnitude is kept where it exceeds its two neighbours across the edge, with a
    sigmoid instead of a hard comparison; the neighbour is interpolated between the 4 discrete
    directions with cos² weights) → soft double threshold (sigmoid around the low/high thresholds,
    the high one weighted fully and the low one by half, a smooth stand-in for hysteresis).
    Thresholds are in units of the [0, 255] grayscale Sobel magnitude, like OpenCV's (100/200 in
    ControlNet's annotator)."""

    def __init__(self, sigma: float = 1.0, low: float = 100.0, high: float = 200.0,
                 nms_sharpness: float = 10.0, threshold_softness: float = 20.0):
        super().__init__()
        self.sigma, self.low, self.high = sigma, low, high
        self.nms_sharpness = nms_sharpness
        self.softness = threshold_softness
        sx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("sobel", torch.stack([sx, sx.t()]).unsqueeze(1), persistent=False)
        # neighbour offsets for directions 0°, 45°, 90°, 135° (dx, dy)
        self._dirs = [(1, 0), (1, 1), (0, 1), (-1, 1)]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img.float()
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        gray = (gray + 1.0) * 127.5  # OpenCV-like 0..255 scale
        radius = max(1, int(math.ceil(2 * self.sigma)))
        k = _gauss_kernel(self.sigma, radius, gray.device, gray.dtype)
        gray = F.pad(gray, (radius, radius, radius, radius), mode="replicate")
        gray = F.conv2d(gray, k.view(1, 1, 1, -1))
        gray = F.conv2d(gray, k.view(1, 1, -1, 1))
        g = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), self.sobel.to(gray.dtype))
        gx, gy = g[:, 0:1], g[:, 1:2]
        mag = torch.sqrt(gx * gx + gy * gy + 1e-6)
        theta = torch.atan2(gy, gx)
        padded = F.pad(mag, (1, 1, 1, 1), mode="replicate")
        h, w = mag.shape[-2:]
        keep = torch.zeros_like(mag)
        for i, (dx, dy) in enumerate(self._dirs):
            ang = i * math.pi / 4
            wgt = torch.cos(theta - ang).pow(2)
            wgt = wgt.pow(4)  # sharpen the assignment to the nearest direction
            fwd = padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
            bwd = padded[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]
            is_max = torch.sigmoid(self.nms_sharpness * (mag - fwd) / (mag.detach() + 1.0)) * \
                torch.sigmoid(self.nms_sharpness * (mag - bwd) / (mag.detach() + 1.0))
            keep = keep + wgt * is_max
        norm = sum(torch.cos(theta - i * math.pi / 4).pow(2).pow(4) for i in range(4))
        thin = mag * keep / norm
        strong = torch.sigmoid((thin - self.high) / self.softness)
        weak = torch.sigmoid((thin - self.low) / self.softness)
        return (0.5 * weak + 0.5 * strong).clamp(0, 1)


# ------------------------------------------------------------------------------------------------
# pose loss backbones (M_p)


class PoseFeatureLoss(nn.Module):
    """MSE between keypoint/pose feature maps of two [-1, 1] image batches (per sample → [B]).

    `net` maps images in [0, 1] ([B, 3, H, W]) to feature maps; it is frozen."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        if not isinstance(net, LivePoseEncoderFeatures):  # the live encoder keeps its own requires_grad
            self.net.requires_grad_(False)
        self.net.eval()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fp = self.net((pred.float() + 1) / 2)
        with torch.no_grad():
            ft = self.net((target.float() + 1) / 2)
        if isinstance(fp, (list, tuple)):  # several unit-normalised maps: LPIPS-style distance per layer
            return torch.stack([(a - b).pow(2).sum(1).flatten(1).mean(1) for a, b in zip(fp, ft)]).mean(0)
        return (fp - ft).pow(2).flatten(1).mean(1)


class LivePoseEncoderFeatures(nn.Module):
    """M_p = the PoseEncoder being trained, read with **detached** weights (gradients reach Î0 only).

    Returns the encoder's maps after conv_in, after every block and after conv_out, each normalised to
    unit length over channels at every location; PoseFeatureLoss compares them LPIPS-style (squared
    distance summed over channels, averaged over space and layers, in [0, 4]). The early layers keep the
    loss informative at the start of stage 1, where the encoder is fresh and conv_out is zero. The
    encoder is held by reference, not registered as a sub-module, so it is not duplicated in state
    dicts or moved twice."""

    def __init__(self, pose_encoder: nn.Module):
        super().__init__()
        self._pe = (pose_encoder,)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pe = self._pe[0]

        def conv(layer, h):
            return F.conv2d(h, layer.weight.detach().to(h.dtype), layer.bias.detach().to(h.dtype),
                            layer.stride, layer.padding)

        def unit(t):  # unit vectors over channels at every location (as LPIPS): independent of the
            return t / (t.pow(2).sum(1, keepdim=True) + 1e-12).sqrt()  # activation scale (finite grad at 0)

        h = F.silu(conv(pe.conv_in, x))
        maps = [h]
        for blk in pe.blocks:
            h = F.silu(conv(blk, h))
            maps.append(h)
        maps.append(conv(pe.conv_out, h))
        return [unit(m) for m in maps]


class RandomInitPoseNetForTests(nn.Module):
    """TEST ONLY: a tiny seeded conv net standing in for a keypoint-heatmap backbone."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.SiLU(), nn.Conv2d(8, 8, 3, 2, 1))
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                m.bias.data.zero_()

    def forward(self, x):
        return self.body(x)


def check_pose_loss(cfg: dict) -> None:
    """Config check of `losses.pose` (files are looked up when the loss is built)."""
    kind = cfg.get("backbone", "pose_encoder")
    prefix, _, path = kind.partition(":") if isinstance(kind, str) else ("", "", "")
    with_file = prefix in ("dwpose_onnx", "torchscript") and bool(path)
    if kind not in ("pose_encoder", "random_init_for_tests") and not with_file:
        raise ConfigError(f"unknown losses.pose.backbone {kind!r}; use {' | '.join(POSE_BACKBONES)}")
    if cfg.get("compare", "simcc") not in POSE_COMPARE:
        raise ConfigError(f"losses.pose.compare must be one of {POSE_COMPARE}, got {cfg.get('compare')!r}")


def build_pose_loss(cfg: dict, pose_encoder: nn.Module | None) -> nn.Module:
    """`losses.pose.backbone` (which row of the paper's ablation each reproduces: train/README.md):
    * "pose_encoder" — the PoseEncoder being trained, applied to the RGB images with detached weights
      (the paper's literal wording: the pose encoder E_P extracts the keypoint maps of Î0 and I);
    * "dwpose_onnx:<file or folder>" — keypoint maps of DWPose's RTMPose ONNX estimator
      (dw-ll_ucoco_384.onnx), frozen, run in torch (train/pose_keypoints.py); `losses.pose.compare`:
      simcc (MSE of the SimCC maps, default) | coords (soft-argmax positions);
    * "torchscript:<path>" — a local TorchScript keypoint-heatmap network ([B,3,H,W] in [0,1] → maps);
    * "random_init_for_tests" — CI only."""
    kind = cfg.get("backbone", "pose_encoder")
    if kind == "pose_encoder":
        if pose_encoder is None:
            raise ConfigError("pose loss backbone 'pose_encoder' needs the PoseEncoder")
        return PoseFeatureLoss(LivePoseEncoderFeatures(pose_encoder))
    if kind == "random_init_for_tests":
        return PoseFeatureLoss(RandomInitPoseNetForTests())
    if isinstance(kind, str) and kind.startswith("dwpose_onnx:"):
        from train.pose_keypoints import SIMCC_BETA, build_dwpose_loss

        return build_dwpose_loss(kind.split(":", 1)[1], cfg.get("compare", "simcc"), cfg.get("beta", SIMCC_BETA))
    if isinstance(kind, str) and kind.startswith("torchscript:"):
        from pathlib import Path

        path = Path(kind.split(":", 1)[1])
        if not path.is_file():
            raise ModelFilesNotFoundError(
                f"pose-loss keypoint network not found: {path}. Export a heatmap network (e.g. RTMPose/DWPose "
                "heads without decoding) with torch.jit.save, use backbone: dwpose_onnx:<dw-ll_ucoco_384.onnx>, "
                "or backbone: pose_encoder.")
        return PoseFeatureLoss(torch.jit.load(str(path), map_location="cpu"))
    raise ConfigError(f"unknown losses.pose.backbone {kind!r}; use {' | '.join(POSE_BACKBONES)}")


# ------------------------------------------------------------------------------------------------
# the PhD loss


@dataclass
class PhDConfig:
    enabled: bool = True
    pose_weight: float = 0.1
    detail_weight: float = 0.1
    lpips_weight: float = 0.1
    bounds: tuple = (0.9, 0.3)
    pixel_size: int | None = None  # compute pixel losses on a resized image (memory), None = full size
    extra: dict = field(default_factory=dict)


class PhDLoss(nn.Module):
    """Pixel-space part of the PhD loss. Call with the decoded one-step estimate Î0 and the target
    image (both [B, 3, H, W] in [-1, 1]) and the per-sample timesteps; returns (total [scalar], parts).

    Each term is computed only on the samples whose t lies in its range and averaged over the whole
    batch (samples outside the range contribute 0), so the expected weight per sample equals λ."""

    def __init__(self, cfg: PhDConfig, pose_loss: nn.Module | None, lpips: nn.Module | None,
                 canny: nn.Module | None = None, num_train_timesteps: int = 1000):
        super().__init__()
        self.cfg = cfg
        self.pose_loss = pose_loss
        self.lpips = lpips
        self.canny = canny if canny is not None else SoftCanny()
        self.T = num_train_timesteps

    def needs_decode(self, t: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the samples that need Î0 decoded (a term with non-zero weight is active)."""
        phase = phd_phase_of(t, self.T, tuple(self.cfg.bounds))
        w = torch.tensor([self.cfg.pose_weight if self.pose_loss is not None else 0.0,
                          self.cfg.detail_weight,
                          self.cfg.lpips_weight if self.lpips is not None else 0.0], device=t.device)
        return w[phase] > 0

    def forward(self, pred_img: torch.Tensor, target_img: torch.Tensor, t: torch.Tensor,
                batch_size: int | None = None):
        """pred_img/target_img: only the selected samples ([n, 3, H, W]); t: their timesteps [n];
        batch_size: the full batch size used for averaging (default n)."""
        n = pred_img.shape[0]
        bs = batch_size or n
        phase = phd_phase_of(t, self.T, tuple(self.cfg.bounds))
        if self.cfg.pixel_size:
            s = int(self.cfg.pixel_size)
            pred_img = F.interpolate(pred_img, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            target_img = F.interpolate(target_img, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        parts = {}
        total = pred_img.new_zeros(())
        specs = (("pose", 0, self.cfg.pose_weight, self.pose_loss),
                 ("detail", 1, self.cfg.detail_weight, self._detail),
                 ("lpips", 2, self.cfg.lpips_weight, self.lpips))
        for name, idx, weight, fn in specs:
            sel = phase == idx
            if fn is None or weight == 0 or not bool(sel.any()):
                parts[name] = pred_img.new_zeros(())
                continue
            per = fn(pred_img[sel], target_img[sel]).float()
            term = per.sum() / bs
            parts[name] = term.detach()
            total = total + weight * term
        return total, parts

    def _detail(self, a, b):
        ea = self.canny(a)
        with torch.no_grad():
            eb = self.canny(b)
        return (ea - eb).pow(2).flatten(1).mean(1)


def latent_v_loss(v_pred: torch.Tensor, v_target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE on the v target, mean over everything (optionally per-sample weights [B], e.g. min-SNR)."""
    per = (v_pred.float() - v_target.float()).pow(2).flatten(1).mean(1)
    if weights is not None:
        per = per * weights
    return per.mean()


def min_snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ weights for the v target: min(SNR, γ) / (SNR + 1). With zero-terminal-SNR the last
    timestep has SNR 0 and would get weight 0, so weights are floored at 1e-3."""
    a = alphas_cumprod.to(t.device)[t.long()].float()
    snr = a / (1 - a).clamp_min(1e-8)
    w = torch.minimum(snr, torch.full_like(snr, gamma)) / (snr + 1)
    return w.clamp_min(1e-3)
