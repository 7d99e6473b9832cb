"""Estimate compute and memory of one training step at full size, without a GPU.

    python train/estimate.py [--resolution 768] [--frames 1] [--batch 4] [--stage 1|2] [--no-phd]
                             [--gpu-tflops 312] [--mfu 0.35] [--gpus 8]
    python train/estimate.py --calibrate      # the same counts, calibrated by a measured small CPU step

Builds the full-size networks (SD1.5 / sd-image-variations config, official unet_additional_kwargs) on
the *meta* device (no memory, no weights) and runs one training forward + backward under torch's
FlopCounterMode, per sample. Memory for weights / gradients / AdamW states is exact from the parameter
counts; activation memory is the size of the tensors autograd saves, counted with gradient
checkpointing on (block inputs only) in 16-bit. Time per step is FLOPs / (peak × MFU): an
EXTRAPOLATION, not a measurement. Compare with `sec_per_step` in a real run's log.csv.
`--calibrate` (train/memory_check.py) measures the same step on real small networks on the CPU and
scales the activation figures by measured / counted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

# sd-vae-ft-mse
FULL_VAE_KWARGS = dict(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4)


def build_networks(base_config: dict | None = None, pose_kwargs: dict | None = None, vae_kwargs: dict | None = None):
    """(reference UNet, denoiser, PoseEncoder, VAE) of an SD-layout base config (default: the full-size
    sd-image-variations one) with the official unet_additional_kwargs, on torch's current default device."""
    from diffusers import AutoencoderKL

    from echomimic_core.models import (OFFICIAL_POSE_ENCODER_KWARGS, OFFICIAL_UNET_ADDITIONAL_KWARGS,
                                       SD_IMAGE_VARIATIONS_UNET_CONFIG, DenoisingUNet3DModel, PoseEncoder,
                                       ReferenceUNet2DModel, denoising_unet_config, reference_unet_config)

    base = dict(base_config or SD_IMAGE_VARIATIONS_UNET_CONFIG)
    vk = dict(vae_kwargs or FULL_VAE_KWARGS)
    n = len(vk["block_out_channels"])
    vk.setdefault("down_block_types", ["DownEncoderBlock2D"] * n)
    vk.setdefault("up_block_types", ["UpDecoderBlock2D"] * n)
    ref = ReferenceUNet2DModel(**reference_unet_config(base))
    den = DenoisingUNet3DModel(**denoising_unet_config(base, OFFICIAL_UNET_ADDITIONAL_KWARGS))
    pose = PoseEncoder(**{**OFFICIAL_POSE_ENCODER_KWARGS, **(pose_kwargs or {})})
    return ref, den, pose, AutoencoderKL(**vk)


def param_counts(ref, den, pose, vae) -> dict:
    return {"reference_unet": sum(p.numel() for p in ref.parameters()),
            "denoiser_spatial": sum(p.numel() for _, p in den.named_spatial_parameters()),
            "motion_modules": sum(p.numel() for _, p in den.named_motion_module_parameters()),
            "pose_encoder": sum(p.numel() for p in pose.parameters()), "vae": sum(p.numel() for p in vae.parameters())}


def train_net(ref, den, pose, vae, stage: int, grad_ckpt: bool):
    """TrainNet with the stage's trainable tensors (stage 1: the spatial networks; stage 2: the motion
    modules) and gradient checkpointing as the trainer sets them; the VAE is frozen."""
    from train.modeling import TrainNet

    if grad_ckpt:
        ref.enable_gradient_checkpointing()
        den.enable_gradient_checkpointing()
    vae.requires_grad_(False)
    if stage == 2:
        for m in (ref, pose, den):
            m.requires_grad_(False)
        for _, p in den.named_motion_module_parameters():
            p.requires_grad_(True)
    return TrainNet(ref, den, pose).train()


def step_inputs(resolution: int, frames: int, batch: int = 1) -> dict:
    """TrainNet's keyword arguments for one step, random, on the current default device."""
    S, h, f = resolution, resolution // 8, frames
    return dict(ref_latents=torch.randn(batch, 4, h, h), noisy_latents=torch.randn(batch, 4, f, h, h),
                timesteps=torch.zeros(batch, dtype=torch.long), audio=torch.randn(batch, f, 50, 384),
                pose_images=torch.rand(batch, 3, f, S, S), pose_keep=torch.ones(batch, dtype=torch.bool),
                reference_keep=None, audio_enabled=True, region_mask=None)


def training_step(net, vae, inputs: dict, phd: bool, phd_latent_crop=None, before_backward=None) -> None:
    """Forward + backward of one step: the v prediction's loss and, with `phd`, the one-step x0 decoded
    by the frozen VAE with gradients (the PhD pixel losses' path). What is counted (meta) and measured (CPU);
    `before_backward()` is called between the two."""
    out = net(**inputs)
    loss = out.float().pow(2).mean()
    if phd:
        b, c, f, h, w = out.shape
        z = out.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        if phd_latent_crop:
            z = z[..., :phd_latent_crop, :phd_latent_crop]
        img = vae.decode(z).sample
        loss = loss + img.float().pow(2).mean()
    if before_backward is not None:
        before_backward()
    loss.backward()


def count_step(ref, den, pose, vae, resolution=768, frames=1, stage=1, phd=True, grad_ckpt=True,
               phd_latent_crop=None, bytes_per_element=2) -> dict:
    """FLOPs and autograd-saved bytes (every saved tensor × bytes_per_element, as counted on the meta
    device) of one per-sample step of these meta-device networks; `saved_param_bytes` is the part that
    is a parameter or a view of one (weights kept for the backward, not activations)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = train_net(ref, den, pose, vae, stage, grad_ckpt)
    param_ids = {id(p) for m in (net, vae) for p in m.parameters()}
    saved = [0, 0]

    def pack(t):
        n = t.numel() * bytes_per_element  # 16-bit activations under mixed precision
        saved[0] += n
        saved[1] += n if id(t if t._base is None else t._base) in param_ids else 0
        return t

    fc = FlopCounterMode(display=False)
    with torch.device("meta"):
        args = step_inputs(resolution, frames)
        with fc, torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            training_step(net, vae, args, phd, phd_latent_crop)
        unet_flops = fc.get_total_flops()
        fc2 = FlopCounterMode(display=False)
        with fc2, torch.no_grad():  # VAE encode of target frame(s) + reference, no gradients
            vae.encode(torch.randn(frames + 1, 3, resolution, resolution))
        enc_flops = fc2.get_total_flops()
    return {"flops": unet_flops + enc_flops, "saved_bytes": saved[0], "saved_param_bytes": saved[1]}


def estimate(resolution=768, frames=1, stage=1, phd=True, grad_ckpt=True, phd_latent_crop=None) -> dict:
    with torch.device("meta"):
        ref, den, pose, vae = build_networks()
    n = param_counts(ref, den, pose, vae)
    spatial = n["reference_unet"] + n["denoiser_spatial"] + n["pose_encoder"]
    trainable = spatial if stage == 1 else n["motion_modules"]
    frozen = (n["motion_modules"] if stage == 1 else spatial) + n["vae"]
    c = count_step(ref, den, pose, vae, resolution, frames, stage, phd, grad_ckpt, phd_latent_crop)
    return {"resolution": resolution, "frames": frames, "stage": stage, "phd": phd, "grad_ckpt": grad_ckpt,
            "phd_latent_crop": phd_latent_crop, "params": n,
            "trainable_params": trainable, "frozen_params": frozen,
            "tflops_per_sample": c["flops"] / 1e12,
            "activation_gb_per_sample": c["saved_bytes"] / 2 ** 30,
            "saved_weights_gb_per_sample": c["saved_param_bytes"] / 2 ** 30}  # part of the activation figure


def report(est: dict, batch: int, gpu_tflops: float, mfu: float, gpus: int) -> dict:
    # AdamW mixed precision: fp32 master weights + fp32 grads + 2 fp32 moments = 16 B / trainable param;
    # frozen weights in fp16 = 2 B / param
    states = est["trainable_params"] * 16 / 2 ** 30
    frozen = est["frozen_params"] * 2 / 2 ** 30
    act = est["activation_gb_per_sample"] * batch
    tf = est["tflops_per_sample"] * batch  # the counter already sees the checkpoint recompute
    sec = tf / (gpu_tflops * mfu)
    return {"per_gpu_batch": batch, "memory_gb_weights_grads_adam": round(states, 1),
            "memory_gb_frozen_fp16": round(frozen, 1), "memory_gb_activations_est": round(act, 1),
            "memory_gb_total_est": round(states + frozen + act, 1),
            "tflops_per_step_per_gpu": round(tf, 1), "sec_per_step_est": round(sec, 2),
            "samples_per_sec_all_gpus_est": round(batch * gpus / sec, 1),
            "assumptions": f"{gpu_tflops} TFLOP/s peak × MFU {mfu}; extrapolated from FLOP counts, not measured"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=768)
    ap.add_argument("--frames", type=int, default=None, help="default: 1 (stage 1) / 24 (stage 2)")
    ap.add_argument("--stage", type=int, default=1, choices=[1, 2])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--no-phd", action="store_true")
    ap.add_argument("--no-grad-ckpt", action="store_true")
    ap.add_argument("--phd-latent-crop", type=int, default=None, help="losses.phd.latent_crop")
    ap.add_argument("--gpu-tflops", type=float, default=312.0, help="A100 dense bf16/fp16 peak")
    ap.add_argument("--mfu", type=float, default=0.35)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--calibrate", action="store_true",
                    help="measure small steps on the CPU, print the calibrated 768² memory (train/memory_check.py)")
    a = ap.parse_args(argv)
    if a.calibrate:
        from train.memory_check import calibrate

        calibrate()
        return 0
    frames = a.frames or (1 if a.stage == 1 else 24)
    est = estimate(a.resolution, frames, a.stage, phd=not a.no_phd and a.stage == 1, grad_ckpt=not a.no_grad_ckpt,
                   phd_latent_crop=a.phd_latent_crop)
    print(json.dumps({"estimate": est, "step": report(est, a.batch, a.gpu_tflops, a.mfu, a.gpus)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
