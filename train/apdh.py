"""EchoMimicV2 staged trainer (APDH stage 1 phases + stage 2), headless.

    python train/apdh.py CONFIG [--set section.key=value ...] [--resume auto|PATH|none]
    accelerate launch --config_file train/accelerate/ddp_8gpu.yaml train/apdh.py CONFIG

CONFIG is a yaml file or a name in train/configs (e.g. stage1_1_initial_pose). See train/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python train/apdh.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F

from echomimic_core.errors import CheckpointError, ConfigError, InputError
from train import data as D
from train import lora_setup
from train import modeling as M
from train.losses import PhDConfig, PhDLoss, SoftCanny, build_pose_loss, latent_v_loss, min_snr_weights, \
    predict_x0_from_v
from train.phases import apply_trainable, load_config, pose_dropout_at, stream_seed
from train.run_files import append_log, custom_object_files, latest_checkpoint, truncate_log


class TrainState:
    """Step counter (the data position is a function of it) + run identity; checkpointed by accelerate."""

    def __init__(self):
        self.step = 0
        self.samples = 0
        self.phase = ""

    def state_dict(self):
        return {"step": self.step, "samples": self.samples, "phase": self.phase}

    def load_state_dict(self, sd):
        self.step, self.samples, self.phase = int(sd["step"]), int(sd["samples"]), sd.get("phase", "")


class EMA:
    """Exponential moving average of the trainable parameters (fp32 shadow copies)."""

    def __init__(self, named_params: dict[str, torch.nn.Parameter], decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().float().clone() for k, p in named_params.items()}

    @torch.no_grad()
    def update(self, named_params: dict[str, torch.nn.Parameter]):
        for k, p in named_params.items():
            self.shadow[k].mul_(self.decay).add_(p.detach().float(), alpha=1 - self.decay)

    def state_dict(self):
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, sd):
        self.decay = sd["decay"]
        self.shadow = {k: v.clone() for k, v in sd["shadow"].items()}


class _Stop:
    """SIGINT/SIGTERM → finish the current step, save a checkpoint, exit."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def uninstall(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum, frame):
        self.requested = True


def _launch_problem() -> str | None:
    """FSDP / DeepSpeed launch configs need GPUs: accelerate's FSDP plugin refuses a CPU-only machine deep
    inside its constructor; say so in one line instead."""
    if torch.cuda.is_available():
        return None
    for env, kind in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(env, "").lower() == "true":
            return (f"the launch config asks for {kind}, which accelerate runs only on GPUs; on CPU launch with "
                    "train/accelerate/ddp_cpu_2proc.yaml (DDP over gloo)")
    return None


def _make_accelerator(cfg):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    problem = _launch_problem()
    if problem:
        raise RuntimeError(problem)
    kw = DistributedDataParallelKwargs(find_unused_parameters=bool(cfg["training"]["find_unused_parameters"]))
    out = Path(cfg["run"]["output_dir"])
    return Accelerator(
        gradient_accumulation_steps=int(cfg["optim"]["grad_accum"]),
        mixed_precision=cfg["training"]["mixed_precision"],  # None: ACCELERATE_MIXED_PRECISION (launch config)
        kwargs_handlers=[kw],
        cpu=not torch.cuda.is_available(),  # CPU runs (tests, CI): DDP over gloo
        project_config=ProjectConfiguration(project_dir=str(out), automatic_checkpoint_naming=False),
    )


class Trainer:
    def __init__(self, cfg: dict, accelerator=None, step_callback=None):
        self.cfg = cfg
        self.acc = accelerator or _make_accelerator(cfg)
        self.out = Path(cfg["run"]["output_dir"])
        self.step_callback = step_callback
        self.state = TrainState()
        self.state.phase = cfg["phase"]["name"]
        self.stop = _Stop()
        self._setup()

    # ------------------------------------------------------------------------------------------
    def _setup(self):
        cfg, acc = self.cfg, self.acc
        torch.manual_seed(cfg["run"]["seed"])
        self.stream_seed = stream_seed(cfg)
        self.models = M.build_models(cfg)
        nets = {"reference_unet": self.models.reference_unet, "denoising_unet": self.models.denoising_unet,
                "pose_encoder": self.models.pose_encoder}
        # a lora: section trains peft adapters only (train/lora_setup.py); otherwise the phase's selectors
        self.lora = lora_setup.setup(cfg, self.models, self.out if acc.is_main_process else None)
        self.trainable = apply_trainable(cfg["phase"], nets) if self.lora is None else self.lora.trainable
        self.net = M.TrainNet(self.models.reference_unet, self.models.denoising_unet, self.models.pose_encoder)
        if cfg["training"]["gradient_checkpointing"]:
            M.enable_gradient_checkpointing(self.net)
        params = [p for p in self.net.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the phase's trainable selectors select no parameter")
        o = cfg["optim"]
        from train.optim import build_optimizer

        self.optimizer = build_optimizer(o, params)  # adamw | adamw8bit | sgd
        warm = max(1, int(o["warmup_steps"]))
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warm))
        self.net, self.optimizer = acc.prepare(self.net, self.optimizer)
        # the lr scheduler is stepped by us once per optimizer step (accelerate would step it per process)
        acc.register_for_checkpointing(self.lr_scheduler)
        acc.register_for_checkpointing(self.state)
        self.custom_objects = ["lr_scheduler", "state"]  # registration order = accelerate's file numbering
        ema_cfg = cfg["training"]["ema"]
        self.ema = None
        if ema_cfg["enabled"]:
            self.ema = EMA(self._named_trainable(), float(ema_cfg["decay"]))
            acc.register_for_checkpointing(self.ema)
            self.custom_objects.append("ema")

        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(acc.mixed_precision, torch.float32)
        vae_dtype = torch.float32 if acc.mixed_precision == "no" else self.weight_dtype
        self.vae = self.models.vae.to(acc.device)
        if self.vae.dtype != vae_dtype:
            self.vae = self.vae.to(dtype=vae_dtype)
        self.vae.requires_grad_(False).eval()
        self.alphas_cumprod = self.models.alphas_cumprod.to(acc.device)
        self.T = int(self.alphas_cumprod.shape[0])

        lc = cfg["losses"]
        phd = lc["phd"]
        self.phd = None
        if phd["enabled"] and (phd["pose_weight"] or phd["detail_weight"] or phd["lpips_weight"]):
            from train.lpips import build_lpips

            pose_loss = build_pose_loss(lc["pose"], M.unwrap(self.models.pose_encoder)) if phd["pose_weight"] else None
            lp = build_lpips(lc["lpips"]) if phd["lpips_weight"] else None
            canny = SoftCanny(lc["canny"]["sigma"], lc["canny"]["low"], lc["canny"]["high"])
            self.phd = PhDLoss(PhDConfig(True, phd["pose_weight"], phd["detail_weight"], phd["lpips_weight"],
                                         tuple(phd["bounds"]), phd["pixel_size"]),
                               pose_loss, lp, canny, self.T).to(acc.device)

        dc = cfg["data"]
        clips, bad = D.training_clips(dc, self.out)  # damaged clips are skipped and logged in the run folder
        ph = cfg["phase"]
        region = ph["region"] if ph["audio"] == "partial" else None
        self.dataset = D.TrainDataset(clips, resolution=dc["resolution"], clip_frames=dc["clip_frames"],
                                      frame_stride=dc["frame_stride"], pose_parts=ph["pose_parts"], region=region,
                                      seed=self.stream_seed, audio_features=M.audio_feature_source(cfg, acc),
                                      repeat=dc["repeat"], hue_rotation=dc["hue_rotation"],
                                      min_ref_gap=dc["min_ref_gap"], augment=dc["augment"], bad_clips=bad)

    def _named_trainable(self):
        return {n: p for n, p in M.unwrap(self.net).named_parameters() if p.requires_grad}

    def _loader(self, start_step: int):
        o = self.cfg["optim"]
        sampler = D.StepSampler(int(o["per_device_batch"]), self.acc.num_processes, self.acc.process_index,
                                int(o["grad_accum"]), start_step, bool(self.cfg["data"]["fixed_batch"]))
        nw = int(self.cfg["data"]["num_workers"])
        return torch.utils.data.DataLoader(self.dataset, batch_size=int(o["per_device_batch"]), sampler=sampler,
                                           num_workers=nw, persistent_workers=False,
                                           prefetch_factor=2 if nw > 0 else None)

    # ------------------------------------------------------------------------------------------
    def resume(self, where: str | None = "auto") -> bool:
        if where in (None, "none", "no", False):
            return False
        path = latest_checkpoint(self.out) if where == "auto" else Path(where)
        if path is None:
            return False
        self.acc.load_state(str(path))
        self.acc.print(f"resumed from {path} at step {self.state.step}")
        return True

    def save_checkpoint(self) -> Path:
        path = self.out / "checkpoints" / f"step_{self.state.step:08d}"
        self.acc.wait_for_everyone()
        self.acc.save_state(str(path))
        if self.acc.is_main_process:
            (path / "train_complete.json").write_text(json.dumps(
                {"step": self.state.step, "phase": self.state.phase, "config": self.cfg,
                 "custom_objects": custom_object_files(self.custom_objects)}, indent=1, default=str))
            keep = int(self.cfg["run"]["keep_checkpoints"])
            done = sorted(p for p in (self.out / "checkpoints").glob("step_*") if p != path)
            for old in done[:max(0, len(done) - (keep - 1))] if keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()
        return path

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _encode(self, images: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] → latents × 0.18215 (posterior mean, or a sample seeded per sample)."""
        chunk = 8  # stage 2 encodes 24 frames per sample: bound the VAE's activation memory
        means, stds = [], []
        for i in range(0, images.shape[0], chunk):
            dist = self.vae.encode(images[i:i + chunk].to(self.vae.dtype)).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
        mean, std = torch.cat(means), torch.cat(stds)
        if self.cfg["training"]["latent"] == "sample":
            eps = torch.stack([torch.randn(mean.shape[1:], generator=g) for g in gens]).to(mean)
            z = mean + std * eps
        else:
            z = mean
        return z.float() * M.VAE_SCALE

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode((z / M.VAE_SCALE).to(self.vae.dtype)).sample.float()

    def _micro_step(self, batch: dict, step: int):
        cfg, acc = self.cfg, self.acc
        dev = acc.device
        tr = cfg["training"]
        seed = self.stream_seed
        ids = [int(n) for n in batch["sample"]]
        b = len(ids)
        target = batch["target"].to(dev)          # [b, 3, f, S, S]
        f = target.shape[2]
        S = target.shape[-1]
        ref = self._encode(batch["ref"].to(dev), [D.torch_gen(seed, "ref_lat", n) for n in ids])
        tgt_flat = target.permute(0, 2, 1, 3, 4).reshape(b * f, 3, S, S)
        z0 = self._encode(tgt_flat, [D.torch_gen(seed, "tgt_lat", n, k) for n in ids for k in range(f)])
        h, w = z0.shape[-2:]
        z0 = z0.view(b, f, 4, h, w).permute(0, 2, 1, 3, 4)  # [b, 4, f, h, w]

        # per-sample randomness keyed by the global sample number
        lo, hi = tr["timestep_range"]
        noise, t, u = [], [], []
        for n in ids:
            g = D.torch_gen(seed, "noise", n)
            e = torch.randn((4, f, h, w), generator=g)
            if tr["noise_offset"]:
                e = e + float(tr["noise_offset"]) * torch.randn((4, 1, 1, 1), generator=g)
            noise.append(e)
            t.append(int(torch.randint(int(lo), int(hi), (1,), generator=g)))
            u.append(torch.rand(3, generator=g))
        noise = torch.stack(noise).to(dev)
        t = torch.tensor(t, dtype=torch.long, device=dev)
        u = torch.stack(u).to(dev)
        a = self.alphas_cumprod[t].view(b, 1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        v_target = a.sqrt() * noise - (1 - a).sqrt() * z0

        ph = cfg["phase"]
        cond = u[:, 0] >= float(tr["cfg_drop"])
        p_pose = pose_dropout_at(ph, step, int(cfg["run"]["max_steps"]))
        pose_keep = cond & (u[:, 1] >= p_pose)
        audio_keep = cond & (u[:, 2] >= float(tr["audio_drop"]))
        audio = batch["audio"].to(dev) * audio_keep.view(b, 1, 1, 1).to(batch["audio"].dtype)
        region = None
        if ph["audio"] == "partial":
            region = F.adaptive_avg_pool2d(batch["region"].to(dev).float(), (h, w))  # [b, f, h, w]
        pose = batch["pose"].to(dev)

        with acc.autocast():
            v_pred = self.net(ref_latents=ref, noisy_latents=z_t, timesteps=t, audio=audio, pose_images=pose,
                              pose_keep=pose_keep, reference_keep=cond, audio_enabled=ph["audio"] != "muted",
                              region_mask=region)
        v_pred = v_pred.float()
        weights = None
        if tr["min_snr_gamma"]:
            weights = min_snr_weights(self.alphas_cumprod, t, float(tr["min_snr_gamma"]))
        loss_latent = latent_v_loss(v_pred, v_target, weights)
        loss = loss_latent
        parts = {"latent": loss_latent.detach()}
        if self.phd is not None:
            sel = self.phd.needs_decode(t)
            if bool(sel.any()):
                x0 = predict_x0_from_v(z_t[sel], v_pred[sel], self.alphas_cumprod, t[sel])  # [n, 4, f, h, w]
                n_sel = x0.shape[0]
                tgt_img = tgt_flat.view(b, f, 3, S, S)[sel]
                crop = cfg["losses"]["phd"].get("latent_crop")
                if crop and int(crop) < min(h, w):  # decode a random latent crop (memory/compute of the VAE pass)
                    c = int(crop)
                    sel_ids = [n for n, s_ in zip(ids, sel.tolist()) if s_]
                    offs = [torch.randint(0, h - c + 1, (2,), generator=D.torch_gen(seed, "crop", n)).tolist()
                            for n in sel_ids]
                    x0 = torch.stack([x0[i, :, :, oy:oy + c, ox:ox + c] for i, (oy, ox) in enumerate(offs)])
                    tgt_img = torch.stack([tgt_img[i, :, :, 8 * oy:8 * (oy + c), 8 * ox:8 * (ox + c)]
                                           for i, (oy, ox) in enumerate(offs)])
                hh, ww = x0.shape[-2:]
                x0 = x0.permute(0, 2, 1, 3, 4).reshape(n_sel * f, 4, hh, ww)
                img = self._decode(x0)
                tgt_img = tgt_img.reshape(n_sel * f, 3, img.shape[-2], img.shape[-1])
                phd_loss, phd_parts = self.phd(img, tgt_img, t[sel].repeat_interleave(f), batch_size=b * f)
                loss = loss + phd_loss
                parts.update(phd_parts)
            else:
                parts.update({k: torch.zeros((), device=dev) for k in ("pose", "detail", "lpips")})
        return loss, parts, t

    def train(self) -> dict:
        cfg, acc = self.cfg, self.acc
        max_steps = int(cfg["run"]["max_steps"])
        ck_every = int(cfg["run"]["checkpoint_every"])
        log_every = max(1, int(cfg["run"]["log_every"]))
        self.out.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:
            (self.out / "config.json").write_text(json.dumps(self.cfg, indent=1, default=str))
            m = self.models
            (self.out / "sources.json").write_text(json.dumps({  # what export.py needs besides the weights
                "base_unet_dir": str(m.base_unet_dir), "vae_folder": str(m.vae_folder),
                "audio_encoder_path": str(m.audio_encoder_path) if m.audio_encoder_path else None,
                "base_unet_config": m.base_unet_config, "unet_additional_kwargs": m.unet_additional_kwargs,
                "scheduler_kwargs": m.scheduler_kwargs}, indent=1))
        start = self.state.step
        log_path = self.out / "log.csv"
        fields = ["step", "loss", "latent", "pose", "detail", "lpips", "lr", "sec_per_step", "samples_per_sec",
                  "pose_dropout", "grad_norm"]
        if acc.is_main_process:
            truncate_log(log_path, start, fields)
        loader = iter(self._loader(start))
        self.stop.install()
        from tqdm.auto import tqdm

        bar = tqdm(total=max_steps, initial=start, disable=not (acc.is_main_process and cfg["run"]["progress_bar"]),
                   desc=cfg["phase"]["name"], dynamic_ncols=True)
        accum = int(cfg["optim"]["grad_accum"])
        gbatch = int(cfg["optim"]["per_device_batch"]) * acc.num_processes * accum
        last = {}
        interrupted = False
        from train.monitor import Monitor

        monitor = Monitor(self)  # validation renders + optional TensorBoard
        try:
            while self.state.step < max_steps:
                t0 = time.perf_counter()
                self.net.train()
                sums = {}
                grad_norm = None
                for _ in range(accum):
                    batch = next(loader)
                    with acc.accumulate(self.net):
                        loss, parts, _ = self._micro_step(batch, self.state.step)
                        acc.backward(loss)
                        if acc.sync_gradients and cfg["optim"]["max_grad_norm"]:
                            grad_norm = acc.clip_grad_norm_(self.net.parameters(), float(cfg["optim"]["max_grad_norm"]))
                        self.optimizer.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) / accum
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0.0) + float(v) / accum
                self.lr_scheduler.step()
                self.state.step += 1
                self.state.samples += gbatch
                if self.ema is not None and self.state.step % int(cfg["training"]["ema"]["every"]) == 0:
                    self.ema.update(self._named_trainable())
                dt = time.perf_counter() - t0
                # averaged over processes for the log; the stop flag is agreed on by all processes
                vals = torch.tensor([sums.get(k, 0.0) for k in ("loss", "latent", "pose", "detail", "lpips")]
                                    + [1.0 if self.stop.requested else 0.0], device=acc.device)
                vals = acc.reduce(vals, reduction="mean") if acc.num_processes > 1 else vals
                stop_now = bool(vals[-1] > 0)
                row = {"step": self.state.step, "loss": float(vals[0]), "latent": float(vals[1]),
                       "pose": float(vals[2]), "detail": float(vals[3]), "lpips": float(vals[4]),
                       "lr": self.lr_scheduler.get_last_lr()[0], "sec_per_step": dt,
                       "samples_per_sec": gbatch / dt if dt > 0 else 0.0,
                       "pose_dropout": pose_dropout_at(cfg["phase"], self.state.step - 1, max_steps),
                       "grad_norm": None if grad_norm is None else float(grad_norm)}
                last = row
                if acc.is_main_process and (self.state.step % log_every == 0 or self.state.step == max_steps or stop_now):
                    append_log(log_path, row, fields)
                monitor.on_step(row, last=self.state.step == max_steps)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                if self.step_callback is not None:
                    self.step_callback(self, row)
                    vals2 = torch.tensor([1.0 if self.stop.requested else 0.0], device=acc.device)
                    stop_now = stop_now or bool((acc.reduce(vals2, "mean") if acc.num_processes > 1 else vals2) > 0)
                if stop_now:
                    self.save_checkpoint()
                    acc.print(f"interrupted: checkpoint saved at step {self.state.step}; rerun to resume")
                    interrupted = True
                    break
                if ck_every > 0 and self.state.step % ck_every == 0 and self.state.step < max_steps:
                    self.save_checkpoint()
            else:
                self.save_checkpoint()
                if cfg["run"]["export_at_end"]:
                    self.export(self.out / "export")
        finally:
            bar.close()
            monitor.close()
            self.stop.uninstall()
        return {"step": self.state.step, "interrupted": interrupted, "last": last}

    def export(self, out_dir: Path, use_ema: bool = True) -> Path:
        from train.export import export_models

        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            net = M.unwrap(self.net)
            override = self.ema.shadow if (self.ema is not None and use_ema) else None
            if self.lora is not None:  # out_dir/lora.safetensors (echomimic_core.lora format)
                self.lora.export(net, out_dir, override, {"step": self.state.step, "phase": self.state.phase})
            else:
                export_models(net, self.models, self.cfg, out_dir, override=override)
        self.acc.wait_for_everyone()
        return out_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="yaml file or name in train/configs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set optim.lr=2e-5 (repeatable)")
    ap.add_argument("--resume", default="auto", help="auto (latest checkpoint in output_dir), a checkpoint path, or none")
    ap.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 for small work, else free CPUs)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
    except (ValueError, FileNotFoundError, __import__("yaml").YAMLError) as exc:  # a bad config: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg, indent=1))
        return 0
    problem = _launch_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from echomimic_core.threads import apply_threads, latent_tokens  # the sampler's policy: 1 thread for small work
    dc, res = cfg["data"], int(cfg["data"]["resolution"])
    apply_threads(args.threads, latent_tokens(res, res, int(dc["clip_frames"]), int(cfg["optim"]["per_device_batch"])))
    try:
        trainer = Trainer(cfg)
        trainer.resume(args.resume)
        result = trainer.train()
    except D.TooManyBadClips as exc:  # from a DataLoader worker the message ends its traceback: last line
        print(f"error: {str(exc).strip().splitlines()[-1].split('TooManyBadClips: ')[-1]}", file=sys.stderr)
        return 2
    except (ConfigError, InputError, CheckpointError) as exc:  # a bad value or file met while building: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trainer.acc.print(json.dumps({"step": result["step"], "interrupted": result["interrupted"],
                                  "loss": result["last"].get("loss")}))
    trainer.acc.end_training()
    return 130 if result["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
