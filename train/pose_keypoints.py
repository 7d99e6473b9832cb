"""The pose-dominant PhD loss read as a keypoint-map loss through a frozen DWPose estimator.

Paper (arXiv 2411.10061, §3.5, Eq. 2): ``L_pose = MSE(M_p^t, M_p^target)``, the keypoint maps of the
one-step estimate Î0 (decoded by the VAE) and of the target frame I, applied in the pose-dominant
phase S1 (the first 10 % of the denoising order, Eq. 5 with λ_pose = 0.1). The paper names the
extractor "the Pose Encoder E_P"; this module is the closer reading of "keypoint map": the maps of a
real pose estimator, DWPose's RTMPose ``dw-ll_ucoco_384.onnx`` (133 COCO-WholeBody keypoints), run
in torch by ``train/onnx_graph.py`` so gradients reach Î0.

Input, as ``echomimic_core.pose.dwpose`` prepares a person box for the pose network: the training
frames are already the aligned half-body crop, so the box is the whole frame (the backend's box when
the detector finds none): centre/scale with padding 1.25, aspect fixed to the network input (w/h =
288/384), the same affine map as ``warp_matrix`` (here a differentiable bilinear ``grid_sample``, zero
outside the frame like ``cv2.warpAffine``'s border), RGB pixels in [0, 255] normalised with the
backend's MEAN/STD. The network input size is read from the file (384×288 for DWPose).

Comparison (``losses.pose.compare``):

* ``simcc`` (default): MSE between the raw SimCC outputs. RTMPose's SimCC vectors *are* its keypoint
  maps: per keypoint a 1-D map along x (2·288 bins) and along y (2·384 bins), trained to match a
  Gaussian label of peak ≈ 1 (the backend's score is their maximum), i.e. the two marginals of a
  keypoint heatmap. So this is Eq. 2 taken literally with the estimator's maps. Per keypoint:
  ½·(mean over x bins + mean over y bins) of the squared difference. A keypoint whose maps do not
  overlap at all costs ≈ √π·σ/bins ≈ 0.07 (σ ≈ 12 bins), identical maps 0.
* ``coords``: squared distance between soft-argmax positions (expectation under softmax(β·map), β = 10,
  the temperature RTMPose's SimCC loss is trained with), in units of the crop's width/height. Gives a
  gradient towards the target position even where the maps do not overlap (blurry early Î0), at the
  cost of ignoring the map's shape.

Both weight keypoint k by the target's confidence ``clamp(min(max sx_k, max sy_k), 0, 1)`` (the
backend's score) and average with those weights: a keypoint the estimator cannot find on the real
frame (out of view, occluded) carries no pose and its maps are noise. The target side runs without
gradients. The estimator is compared with itself (Î0 vs I), not with the dataset's stored keypoints:
its own bias and crop convention cancel, the loss is exactly 0 at Î0 = I, and no keypoint tensors
have to travel with the batch (they would also need the augmentation crop applied twice).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from echomimic_core.errors import CheckpointError, ConfigError, ModelFilesNotFoundError
from echomimic_core.pose.dwpose import MEAN, POSE_FILE, STD, _static_hw, box_center_scale, fix_aspect, warp_matrix
from train.losses import POSE_COMPARE

SIMCC_BETA = 10.0  # RTMPose's KL SimCC loss temperature (mmpose KLDiscretLoss beta)


def crop_theta(height: int, width: int, in_h: int, in_w: int) -> np.ndarray:
    """The 2×3 ``affine_grid`` matrix (align_corners=False) of the backend's whole-frame box crop:
    network-input coordinates in [-1, 1] → frame coordinates in [-1, 1]."""
    center, scale = box_center_scale(np.array([0.0, 0.0, width, height]))
    scale = fix_aspect(scale, in_w / in_h)
    fwd = np.vstack([warp_matrix(center, scale, in_w, in_h).astype(np.float64), [0, 0, 1]])  # frame px → input px
    # pixel centre i of an n-pixel axis sits at (2i + 1)/n − 1 in grid units
    to_px = np.array([[in_w / 2, 0, (in_w - 1) / 2], [0, in_h / 2, (in_h - 1) / 2], [0, 0, 1]])
    to_grid = np.array([[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1]])
    return (to_grid @ np.linalg.inv(fwd) @ to_px)[:2]


class DWPoseKeypointLoss(nn.Module):
    """Per-sample keypoint-map distance ([B]) between two [-1, 1] RGB batches (see the module docstring).

    ``net``: the frozen estimator, ``[B, 3, in_h, in_w]`` normalised → outputs whose ``simcc_x`` /
    ``simcc_y`` (by name, else the first two, as the backend reads them) are ``[B, K, bins]``.
    ``batch_one``: the graph has a static batch of 1 (DWPose's file), so samples run one at a time."""

    def __init__(self, net: nn.Module, input_hw: tuple[int, int], compare: str = "simcc",
                 beta: float = SIMCC_BETA, batch_one: bool = False, output_names: list[str] | None = None):
        super().__init__()
        if compare not in POSE_COMPARE:
            raise ConfigError(f"losses.pose.compare must be one of {POSE_COMPARE}, got {compare!r}")
        self.net = net.eval().requires_grad_(False)
        self.in_h, self.in_w = (int(v) for v in input_hw)
        self.compare, self.beta, self.batch_one = compare, float(beta), batch_one
        names = list(output_names or [])
        named = {"simcc_x", "simcc_y"} <= set(names)
        self._pick = [names.index("simcc_x"), names.index("simcc_y")] if named else [0, 1]
        self.register_buffer("mean", torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def estimator_input(self, img: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB [B, 3, H, W] → the normalised network input [B, 3, in_h, in_w]."""
        b, _, h, w = img.shape
        theta = torch.tensor(crop_theta(h, w, self.in_h, self.in_w), dtype=torch.float32, device=img.device)
        grid = F.affine_grid(theta.expand(b, 2, 3), [b, 3, self.in_h, self.in_w], align_corners=False)
        pixels = (img.float() + 1.0) * 127.5
        crop = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return (crop - self.mean) / self.std

    def maps(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SimCC maps ``([B, K, Wx], [B, K, Wy])`` of a [-1, 1] batch."""
        x = self.estimator_input(img)
        outs = [self.net(x[i:i + 1]) for i in range(x.shape[0])] if self.batch_one else [self.net(x)]
        sx = torch.cat([o[self._pick[0]] for o in outs]).float()
        sy = torch.cat([o[self._pick[1]] for o in outs]).float()
        return sx, sy

    def _soft_argmax(self, m: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.beta * m, dim=-1)
        pos = torch.arange(m.shape[-1], device=m.device, dtype=m.dtype) / m.shape[-1]
        return (p * pos).sum(-1)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        px, py = self.maps(pred)
        with torch.no_grad():
            tx, ty = self.maps(target)
            weight = torch.minimum(tx.amax(-1), ty.amax(-1)).clamp(0.0, 1.0)  # [B, K] target confidence
        if self.compare == "simcc":
            per_kp = 0.5 * ((px - tx).pow(2).mean(-1) + (py - ty).pow(2).mean(-1))
        else:
            per_kp = (self._soft_argmax(px) - self._soft_argmax(tx)).pow(2) + \
                (self._soft_argmax(py) - self._soft_argmax(ty)).pow(2)
        return (weight * per_kp).sum(-1) / weight.sum(-1).clamp_min(1e-6)


def build_dwpose_loss(spec: str, compare: str = "simcc", beta: float = SIMCC_BETA) -> DWPoseKeypointLoss:
    """``spec``: an ONNX file, or a folder holding ``dw-ll_ucoco_384.onnx``."""
    from train.onnx_graph import OnnxGraph

    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / POSE_FILE
    if not path.is_file():
        raise ModelFilesNotFoundError(
            f"pose-loss estimator not found: {path}. Set losses.pose.backbone: dwpose_onnx:<path to {POSE_FILE}> "
            "(the DWPose pose model, HF yzd-v/DWPose), or use backbone: pose_encoder")
    graph = OnnxGraph.load(path)
    if len(graph.input_names) != 1 or len(graph.output_names) < 2:
        raise CheckpointError(f"{path}: a pose estimator with one image input and SimCC x/y outputs is expected, got "
                          f"inputs {graph.input_names} and outputs {graph.output_names}")
    shape = graph.input_shapes[0]
    return DWPoseKeypointLoss(graph, _static_hw(shape, (384, 288)), compare, beta,
                              batch_one=bool(shape) and shape[0] == 1, output_names=graph.output_names)
