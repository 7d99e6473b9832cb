"""Fréchet distance between two Gaussians fitted to feature sets (FID, FVD, E-FID).

``d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Heusel et al. 2017), with the matrix square
root from :func:`scipy.linalg.sqrtm`. Numerical care as in the reference FID code: when the product
is near-singular (non-finite root) a small multiple of the identity is added to both covariances;
the root's imaginary part, which rounding leaves behind, is dropped after checking it is small.
Covariances are the unbiased sample covariances (``np.cov``, ``ddof=1``), as in pytorch-fid and the
StyleGAN-V FVD code.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from ..errors import InputError


@dataclass
class GaussianStats:
    """Mean ``[d]`` and covariance ``[d, d]`` of a feature set of ``n`` samples."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def of(cls, features: np.ndarray, what: str = "features") -> "GaussianStats":
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or len(f) < 2:
            raise InputError(f"{what}: need at least 2 feature vectors [n, d] for a covariance; got shape {f.shape}")
        if not np.isfinite(f).all():
            raise InputError(f"{what}: non-finite feature values (a broken backbone or input?)")
        return cls(f.mean(0), np.atleast_2d(np.cov(f, rowvar=False)), len(f))


def frechet_distance(a: GaussianStats, b: GaussianStats, eps: float = 1e-6, imag_tol: float = 1e-3) -> float:
    """Squared Fréchet distance of two Gaussians (>= 0 up to rounding)."""
    mu1, mu2 = np.atleast_1d(a.mu), np.atleast_1d(b.mu)
    s1, s2 = np.atleast_2d(a.sigma), np.atleast_2d(b.sigma)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise InputError(f"feature sizes differ: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # a singular product is handled below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        warnings.warn(f"Fréchet distance: singular product of covariances; adding {eps} to the diagonals",
                      RuntimeWarning, stacklevel=2)
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.imag(np.diagonal(covmean)))) if covmean.size else 0.0
        scale = max(1.0, float(np.max(np.abs(np.real(covmean)))))
        if imag > imag_tol * scale:
            raise ArithmeticError(f"Fréchet distance: the covariance square root has a large imaginary part ({imag:.3g})")
        covmean = np.real(covmean)
    value = float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0) if value > -1e-6 * max(1.0, abs(np.trace(s1))) else value


def frechet_from_features(pred: np.ndarray, ref: np.ndarray, what: str = "features") -> float:
    return frechet_distance(GaussianStats.of(ref, f"{what} (reference)"), GaussianStats.of(pred, f"{what} (prediction)"))
