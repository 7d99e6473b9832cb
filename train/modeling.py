"""The trainer's view of the EchoMimicV2 networks: building them (SD init or official layout), the
training forward (reference pass → pose features → denoiser), and small helpers.

Only echomimic_core's public model classes and loader are used; the forward goes through the same
attention processors as inference (reference read/write, audio cross-attention with its mute switch
and region mask), so there is no second copy of the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from echomimic_core.models.configs import LATENT_SCALE as VAE_SCALE  # noqa: F401 (used as M.VAE_SCALE; hard-coded officially, fixtures quirk 12)


@dataclass
class Models:
    vae: nn.Module
    reference_unet: nn.Module
    denoising_unet: nn.Module
    pose_encoder: nn.Module
    alphas_cumprod: torch.Tensor
    base_unet_config: dict
    unet_additional_kwargs: dict
    scheduler_kwargs: dict
    vae_folder: Path
    base_unet_dir: Path            # holds the base unet config.json (+ weights)
    audio_encoder_path: Path | None


_WRAPPERS = ("DistributedDataParallel", "FullyShardedDataParallel", "DeepSpeedEngine", "DataParallel")


def unwrap(module: nn.Module) -> nn.Module:
    """The bare module inside DDP/FSDP/DeepSpeed/torch.compile wrappers."""
    while type(module).__name__ in _WRAPPERS:
        module = module.module
    return getattr(module, "_orig_mod", module)


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _folder_configs(folder: Path) -> tuple[dict, dict, dict]:
    """base unet config, unet_additional_kwargs, scheduler kwargs of an official-layout folder."""
    from echomimic_core.checkpoints import INFERENCE_CONFIG_NAME, load_inference_config
    from echomimic_core.errors import ModelFilesNotFoundError

    base_cfg_path = folder / "sd-image-variations-diffusers" / "unet" / "config.json"
    if not base_cfg_path.is_file():
        raise ModelFilesNotFoundError(
            f"{base_cfg_path} not found. init.base_folder must hold sd-image-variations-diffusers/unet/ "
            "(config.json + diffusion_pytorch_model.safetensors) and sd-vae-ft-mse/ (the official "
            "pretrained_weights layout).")
    base = _read_json(base_cfg_path)
    inf = folder / INFERENCE_CONFIG_NAME
    cfg = load_inference_config(inf if inf.is_file() else None)
    return base, cfg["unet_additional_kwargs"], cfg["noise_scheduler_kwargs"]


def copy_matching(module: nn.Module, state: dict) -> tuple[int, list[str]]:
    """Copy every tensor whose name and shape match (the official from_pretrained_2d rule).
    Returns (number copied, names of module keys left untouched)."""
    own = module.state_dict()
    hit = {}
    for k, v in state.items():
        if k in own and tuple(own[k].shape) == tuple(v.shape):
            hit[k] = v.to(own[k].dtype)
    module.load_state_dict(hit, strict=False)
    return len(hit), sorted(set(own) - set(hit))


def alphas_cumprod_of(sched_kwargs: dict) -> torch.Tensor:
    from echomimic_core.sampling.scheduler import make_scheduler

    return make_scheduler(sched_kwargs).alphas_cumprod.clone().float()


def build_models(cfg: dict) -> Models:
    """Build VAE + the three trained networks in float32 on CPU per `cfg['init']`."""
    from echomimic_core.checkpoints import BASE_WEIGHT_NAMES, load_vae, read_state_dict
    from echomimic_core.errors import ConfigError, ModelFilesNotFoundError
    from echomimic_core.models import (OFFICIAL_POSE_ENCODER_KWARGS, DenoisingUNet3DModel, PoseEncoder,
                                       ReferenceUNet2DModel, denoising_unet_config, reference_unet_config)

    ini = cfg["init"]
    base_folder = Path(ini["base_folder"])
    mode = ini["from"]
    if mode == "sd":
        base_cfg, extra, sched = _folder_configs(base_folder)
        ref = ReferenceUNet2DModel(**reference_unet_config(base_cfg))
        den = DenoisingUNet3DModel(**denoising_unet_config(base_cfg, extra))
        base_unet_dir = base_folder / "sd-image-variations-diffusers" / "unet"
        sd_file = next((base_unet_dir / n for n in BASE_WEIGHT_NAMES if (base_unet_dir / n).is_file()), None)
        if sd_file is None:
            raise ModelFilesNotFoundError(f"none of {list(BASE_WEIGHT_NAMES)} in {base_unet_dir}")
        sd = {k: v.float() for k, v in read_state_dict(sd_file).items()}
        copy_matching(ref, sd)
        copy_matching(den, sd)  # attn2 to_k/to_v (768 vs 384) stay at their fresh init, as officially
        pe_kwargs = dict(OFFICIAL_POSE_ENCODER_KWARGS)
        pe_kwargs.update(cfg.get("model", {}).get("pose_encoder", {}) or {})
        pe_kwargs["conditioning_embedding_channels"] = int(base_cfg["block_out_channels"][0])
        pose = PoseEncoder(**pe_kwargs)
        vae_folder = base_folder / "sd-vae-ft-mse"
        tiny = base_folder / "audio_processor" / "tiny.pt"
        audio_path = tiny if tiny.is_file() else None
    elif mode == "official":
        from echomimic_core.checkpoints import load_models

        folder = Path(ini.get("weights_folder") or base_folder)
        loaded = load_models(folder, variant=ini.get("variant") or "normal", dtype=torch.float32, device="cpu")
        ref, den, pose = loaded.reference_unet, loaded.denoising_unet, loaded.pose_encoder
        base_unet_dir = Path(loaded.files.base_unet_dir)
        base_cfg = _read_json(base_unet_dir / "config.json")
        extra, sched = dict(loaded.unet_additional_kwargs), dict(loaded.scheduler_kwargs)
        vae_folder = Path(loaded.files.vae)
        audio_path = Path(loaded.audio_encoder_path) if loaded.audio_encoder_path else None
        for m in (ref, den, pose):
            m.train()
    else:
        raise ConfigError(f"init.from must be 'sd' or 'official', got {mode!r}")
    if ini.get("motion_module"):  # AnimateDiff / EchoMimic V1/V2 / diffusers MotionAdapter (train/motion_init.py)
        from train.motion_init import init_motion_modules

        init_motion_modules(den, ini["motion_module"])
    vae = load_vae(vae_folder, dtype=torch.float32)  # local files only: a missing folder is an error, never a hub id
    for m in (ref, den, pose):
        m.float()
    return Models(vae, ref, den, pose, alphas_cumprod_of(sched), base_cfg, extra, sched, vae_folder, base_unet_dir,
                  audio_path)


def enable_gradient_checkpointing(net: nn.Module) -> None:
    net = unwrap(net)
    for m in (net.reference_unet, net.denoising_unet):
        m.enable_gradient_checkpointing()


class TrainNet(nn.Module):
    """Reference UNet + denoising UNet + PoseEncoder as one module (what DDP/FSDP wraps).

    forward(ref_latents [b,4,h,w], noisy_latents [b,4,f,h,w], timesteps [b], audio [b,f,n,384],
            pose_images [b,3,f,H,W] in [0,1], pose_keep [b] bool, reference_keep [b] bool,
            audio_enabled bool, region_mask [b,f,h,w] or None) → v prediction [b,4,f,h,w].

    reference_keep False = the sampler's unconditional branch for that sample (no reference tokens);
    pose_keep False = all-zero pose features (the unconditional / pose-dropout convention);
    audio_enabled False = audio cross-attention muted (its residual skipped, phases 1–2)."""

    def __init__(self, reference_unet: nn.Module, denoising_unet: nn.Module, pose_encoder: nn.Module):
        super().__init__()
        self.reference_unet = reference_unet
        self.denoising_unet = denoising_unet
        self.pose_encoder = pose_encoder
        self._pairing = None

    def forward(self, ref_latents, noisy_latents, timesteps, audio, pose_images, pose_keep, reference_keep,
                audio_enabled: bool = True, region_mask=None):
        from echomimic_core.models import reference_pairing

        b = noisy_latents.shape[0]
        dt = next(self.denoising_unet.parameters()).dtype
        zero_t = torch.zeros(b, dtype=torch.long, device=ref_latents.device)
        bank = self.reference_unet(ref_latents.to(dt), zero_t, return_dict=True).reference_bank
        if self._pairing is None:
            self._pairing = reference_pairing(self.reference_unet, self.denoising_unet)
        if any(k != v for k, v in self._pairing.items()):
            bank = bank.remap(self._pairing)
        from echomimic_core.sampling.guidance import mask_conditions

        pose_feat = self.pose_encoder(pose_images.to(dt))
        # the sampler's unconditional-branch rule (zero audio, zero pose, no reference) where reference_keep
        # is False, plus the pose-only dropout of pose_keep
        audio, pose_feat, reference_keep = mask_conditions(audio.to(dt), pose_feat, reference_keep, pose_keep=pose_keep)
        out = self.denoising_unet(noisy_latents.to(dt), timesteps, audio=audio, pose_features=pose_feat,
                                  reference_bank=bank, reference_mask=reference_keep, audio_enabled=audio_enabled,
                                  audio_region_mask=region_mask, return_dict=True)
        return out.sample


def audio_feature_source(cfg: dict, acc):
    """Per-clip whisper-window source for the dataset (cached in the dataset or computed into the run)."""
    from train import data as D

    dc = cfg["data"]
    clips = D.list_clips(dc["roots"], dc["kinds"], min_frames=max(2, dc["clip_frames"]))
    enc = dc.get("audio_encoder")
    if not enc:
        ini = cfg["init"]
        folders = ([ini["weights_folder"]] if ini["from"] == "official" and ini.get("weights_folder") else []) \
            + [ini["base_folder"]]
        cands = [Path(f) / "audio_processor" / "tiny.pt" for f in folders]
        enc = str(next((c for c in cands if c.is_file()), cands[-1]))
    return D.ensure_audio_features(clips, dc["audio_features"], Path(cfg["run"]["output_dir"]) / "feature_cache",
                                   enc, is_main=acc.is_main_process, wait=acc.wait_for_everyone)
