"""Estimate compute and memory of one training step at full size, without a GPU.

    python train/estimate.py [--resolution 768] [--frames 1] [--batch 4] [--stage 1|2] [--no-phd]
                             [--gpu-tflops 312] [--mfu 0.35] [--gpus 8]

Builds the full-size networks (SD1.5 / sd-image-variations config, official unet_additional_kwargs) on
the *meta* device (no memory, no weights) and runs one training forward + backward under torch's
FlopCounterMode, per sample. Memory for weights / gradients / AdamW states is exact from the parameter
counts; activation memory is the size of the tensors autograd saves, counted with gradient
checkpointing on (block inputs only) in 16-bit. Time per step is FLOPs / (peak × MFU): an
EXTRAPOLATION, not a measurement. Compare with `sec_per_step` in a real run's log.csv.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch


def estimate(resolution=768, frames=1, stage=1, phd=True, grad_ckpt=True, phd_latent_crop=None) -> dict:
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    from echomimic_core.models import (OFFICIAL_POSE_ENCODER_KWARGS, OFFICIAL_UNET_ADDITIONAL_KWARGS,
                                       SD_IMAGE_VARIATIONS_UNET_CONFIG, DenoisingUNet3DModel, PoseEncoder,
                                       ReferenceUNet2DModel, denoising_unet_config, reference_unet_config)
    from train.modeling import TrainNet

    base = dict(SD_IMAGE_VARIATIONS_UNET_CONFIG)
    with torch.device("meta"):
        ref = ReferenceUNet2DModel(**reference_unet_config(base))
        den = DenoisingUNet3DModel(**denoising_unet_config(base, OFFICIAL_UNET_ADDITIONAL_KWARGS))
        pose = PoseEncoder(**OFFICIAL_POSE_ENCODER_KWARGS)
        vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
    n_ref = sum(p.numel() for p in ref.parameters())
    n_den_sp = sum(p.numel() for _, p in den.named_spatial_parameters())
    n_mm = sum(p.numel() for _, p in den.named_motion_module_parameters())
    n_pose = sum(p.numel() for p in pose.parameters())
    n_vae = sum(p.numel() for p in vae.parameters())
    trainable = n_ref + n_den_sp + n_pose if stage == 1 else n_mm
    frozen = (n_mm if stage == 1 else n_ref + n_den_sp + n_pose) + n_vae
    if grad_ckpt:
        ref.enable_gradient_checkpointing()
        den.enable_gradient_checkpointing()
    if stage == 2:
        for m in (ref, pose):
            m.requires_grad_(False)
        den.requires_grad_(False)
        for _, p in den.named_motion_module_parameters():
            p.requires_grad_(True)
    net = TrainNet(ref, den, pose).train()
    S, h, f = resolution, resolution // 8, frames
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * 2  # 16-bit activations under mixed precision
        return t

    fc = FlopCounterMode(display=False)
    with torch.device("meta"):
        args = dict(ref_latents=torch.randn(1, 4, h, h), noisy_latents=torch.randn(1, 4, f, h, h),
                    timesteps=torch.zeros(1, dtype=torch.long), audio=torch.randn(1, f, 50, 384),
                    pose_images=torch.rand(1, 3, f, S, S), pose_keep=torch.ones(1, dtype=torch.bool),
                    reference_keep=None, audio_enabled=True, region_mask=None)
        with fc, torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            out = net(**args)
            loss = out.float().pow(2).mean()
            if phd:  # one-step x0 decoded by the frozen VAE with gradients (PhD pixel losses)
                z = out.permute(0, 2, 1, 3, 4).reshape(f, 4, h, h)
                if phd_latent_crop:
                    z = z[..., :phd_latent_crop, :phd_latent_crop]
                img = vae.decode(z).sample
                loss = loss + img.float().pow(2).mean()
            loss.backward()
        unet_flops = fc.get_total_flops()
        fc2 = FlopCounterMode(display=False)
        with fc2, torch.no_grad():  # VAE encode of target frame(s) + reference, no gradients
            vae.encode(torch.randn(f + 1, 3, S, S))
        enc_flops = fc2.get_total_flops()
    per_sample = unet_flops + enc_flops
    return {"resolution": resolution, "frames": frames, "stage": stage, "phd": phd, "grad_ckpt": grad_ckpt,
            "phd_latent_crop": phd_latent_crop,
            "params": {"reference_unet": n_ref, "denoiser_spatial": n_den_sp, "motion_modules": n_mm,
                       "pose_encoder": n_pose, "vae": n_vae},
            "trainable_params": trainable, "frozen_params": frozen,
            "tflops_per_sample": per_sample / 1e12,
            "activation_gb_per_sample": saved[0] / 2 ** 30}


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
    a = ap.parse_args(argv)
    frames = a.frames or (1 if a.stage == 1 else 24)
    est = estimate(a.resolution, frames, a.stage, phd=not a.no_phd and a.stage == 1, grad_ckpt=not a.no_grad_ckpt,
                   phd_latent_crop=a.phd_latent_crop)
    print(json.dumps({"estimate": est, "step": report(est, a.batch, a.gpu_tflops, a.mfu, a.gpus)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
