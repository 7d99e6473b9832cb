"""PSNR and SSIM, frame by frame, in torch (no backbone).

Both work on RGB uint8 frames with the data range L = 255 and are computed per frame, then averaged
over the frames of a clip (and the clip means over the clips), which is how the common video metric
scripts (e.g. common_metrics_on_video_quality) report them.

* **PSNR** (Hore & Ziou 2010, the paper's [13]): ``10 * log10(L^2 / MSE)`` with the MSE over all
  pixels and the three channels of a frame. Identical frames give ``inf`` (and a clip containing one
  identical frame has a mean of ``inf``).
* **SSIM** (Wang et al. 2004, the paper's [28]) with the paper's standard settings: an 11x11 Gaussian
  window of sigma 1.5 (normalised to sum 1), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, the biased
  (population) local variances, the window applied "valid" (no padding, as in the reference MATLAB
  code and pytorch-msssim), computed per colour channel and averaged over channels and positions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

DATA_RANGE = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _to_tensor(frames: np.ndarray, device: str | torch.device | None, dtype: torch.dtype) -> torch.Tensor:
    """uint8 ``[n, H, W, 3]`` -> float ``[n, 3, H, W]`` in [0, 255]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device or "cpu").permute(0, 3, 1, 2).to(dtype)


def psnr_frames(pred: np.ndarray, ref: np.ndarray, device=None, chunk: int = 16) -> np.ndarray:
    """Per-frame PSNR (dB) of uint8 ``[n, H, W, 3]`` arrays of equal shape; ``inf`` where identical."""
    out = []
    for s in range(0, len(pred), chunk):
        a = _to_tensor(pred[s:s + chunk], device, torch.float64)
        b = _to_tensor(ref[s:s + chunk], device, torch.float64)
        mse = (a - b).pow(2).flatten(1).mean(1)
        val = 10.0 * torch.log10(DATA_RANGE ** 2 / mse)  # mse == 0 -> inf
        out.append(val.cpu().numpy())
    return np.concatenate(out)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float64) -> torch.Tensor:
    """1-D Gaussian taps ``[size]`` summing to 1."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable valid Gaussian filter of ``[n, c, H, W]``, channel by channel."""
    c = x.shape[1]
    kx = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)


def ssim_frames(pred: np.ndarray, ref: np.ndarray, device=None, chunk: int = 8) -> np.ndarray:
    """Per-frame SSIM of uint8 ``[n, H, W, 3]`` arrays of equal shape (frames at least 11x11)."""
    if min(pred.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}; got {pred.shape[2]}x{pred.shape[1]}")
    dtype = torch.float64 if (device is None or str(device) == "cpu") else torch.float32
    g = gaussian_window(dtype=dtype).to(device or "cpu")
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    out = []
    for s in range(0, len(pred), chunk):
        x = _to_tensor(pred[s:s + chunk], device, dtype)
        y = _to_tensor(ref[s:s + chunk], device, dtype)
        mx, my = _blur(x, g), _blur(y, g)
        sxx = _blur(x * x, g) - mx * mx
        syy = _blur(y * y, g) - my * my
        sxy = _blur(x * y, g) - mx * my
        num = (2 * mx * my + c1) * (2 * sxy + c2)
        den = (mx * mx + my * my + c1) * (sxx + syy + c2)
        out.append((num / den).flatten(1).mean(1).cpu().numpy())
    return np.concatenate(out)


def expected_psnr(mse: float) -> float:
    """The PSNR a given MSE (on the 0..255 scale) gives: ``10 log10(255^2 / mse)``."""
    return math.inf if mse == 0 else 10.0 * math.log10(DATA_RANGE ** 2 / mse)
