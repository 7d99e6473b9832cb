"""Export a training run to the official EchoMimicV2 weight layout.

    python train/export.py RUN_DIR OUT_DIR [--checkpoint PATH] [--no-ema] [--safetensors] [--dtype fp32|fp16]

Writes into OUT_DIR:
  reference_unet.pth     full ReferenceNet state dict (loaded strictly by the official code and ours)
  denoising_unet.pth     denoiser state dict without motion-module keys
  motion_module.pth      only the keys containing "motion_modules."
  pose_encoder.pth       PoseEncoder state dict
  (*.safetensors         the same tensors, with --safetensors)
  sd-image-variations-diffusers/unet/config.json   (the base weights are not needed: the .pth files cover every key)
  sd-vae-ft-mse/         the VAE folder the run used
  audio_processor/tiny.pt  copied when the run's base folder has it
  inference_config.json  unet_additional_kwargs + noise_scheduler_kwargs
  train_info.json        run, phase, step, whether EMA weights were used
Every .pth is a plain dict of tensors (loadable with torch.load(weights_only=True)).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

PREFIXES = ("reference_unet.", "denoising_unet.", "pose_encoder.")


def split_train_state(state: dict) -> dict[str, dict]:
    """TrainNet state dict ('reference_unet.x', ...) → {module: {x: tensor}}."""
    out = {p[:-1]: {} for p in PREFIXES}
    for k, v in state.items():
        for p in PREFIXES:
            if k.startswith(p):
                out[p[:-1]][k[len(p):]] = v
                break
        else:
            raise KeyError(f"unexpected key {k} in the training state")
    return out


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy files only (no permission bits: the source may be a read-only shared folder)."""
    if dst.exists():
        shutil.rmtree(dst)
    for p in sorted(Path(src).rglob("*")):
        target = dst / p.relative_to(src)
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)


def export_state(state: dict, cfg: dict, out_dir: str | os.PathLike, *, base_unet_dir: Path, vae_folder: Path,
                 audio_encoder_path: Path | None, base_unet_config: dict, unet_additional_kwargs: dict, scheduler_kwargs: dict,
                 info: dict | None = None, safetensors: bool = False, dtype: torch.dtype | None = None) -> Path:
    from echomimic_core.checkpoints import save_inference_config, save_models

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = split_train_state(state)
    save_models(out, reference_unet=parts["reference_unet"], denoising_unet=parts["denoising_unet"],
                pose_encoder=parts["pose_encoder"], suffixes=(".pth", ".safetensors") if safetensors else (".pth",),
                dtype=dtype)

    unet_dir = out / "sd-image-variations-diffusers" / "unet"
    unet_dir.mkdir(parents=True, exist_ok=True)
    (unet_dir / "config.json").write_text(json.dumps(base_unet_config, indent=1))
    if Path(vae_folder).resolve() != (out / "sd-vae-ft-mse").resolve():
        _copy_tree(Path(vae_folder), out / "sd-vae-ft-mse")
    tiny = Path(audio_encoder_path) if audio_encoder_path else None
    if tiny is not None and tiny.is_file() and not (out / "audio_processor" / "tiny.pt").exists():
        (out / "audio_processor").mkdir(exist_ok=True)
        shutil.copyfile(tiny, out / "audio_processor" / "tiny.pt")
    save_inference_config(out, unet_additional_kwargs, scheduler_kwargs)
    (out / "train_info.json").write_text(json.dumps(info or {}, indent=1, default=str))
    return out


def export_models(net, models, cfg: dict, out_dir, *, override: dict | None = None, info: dict | None = None,
                  safetensors: bool = False, dtype=None) -> Path:
    """Export from a live TrainNet (end of a run); `override` = EMA shadow weights by parameter name."""
    state = dict(net.state_dict())
    if override:
        state.update({k: v for k, v in override.items() if k in state})
    return export_state(state, cfg, out_dir, base_unet_dir=models.base_unet_dir, vae_folder=models.vae_folder,
                        audio_encoder_path=models.audio_encoder_path,
                        base_unet_config=models.base_unet_config, unet_additional_kwargs=models.unet_additional_kwargs,
                        scheduler_kwargs=models.scheduler_kwargs,
                        info=dict(info or {}, phase=cfg["phase"]["name"], ema=bool(override)),
                        safetensors=safetensors, dtype=dtype)


def _latest(run: Path) -> Path:
    from train.run_files import latest_checkpoint

    ck = latest_checkpoint(run)
    if ck is None:
        raise FileNotFoundError(f"{run}/checkpoints has no complete checkpoint")
    return ck


def export_run(run_dir, out_dir, checkpoint=None, use_ema: bool = True, safetensors: bool = False,
               dtype=None, lora: bool = False) -> Path:
    """Export a run folder's checkpoint (default: the latest) without building the networks."""
    from echomimic_core.checkpoints import read_state_dict

    run = Path(run_dir)
    ck = Path(checkpoint) if checkpoint else _latest(run)
    meta = json.loads((ck / "train_complete.json").read_text())
    cfg = meta["config"]
    model_file = ck / "model.safetensors"
    if model_file.is_file():
        state = read_state_dict(model_file)
    elif (ck / "pytorch_model.bin").is_file():
        state = read_state_dict(ck / "pytorch_model.bin")
    else:
        raise FileNotFoundError(f"{ck}: no model.safetensors (FSDP sharded checkpoints: merge them first with "
                                "`accelerate merge-weights`)")
    used_ema = False
    if use_ema and cfg["training"]["ema"]["enabled"]:
        from train.run_files import load_custom_object

        ema = load_custom_object(ck, "ema")  # by name (train_complete.json), not by file number
        if ema is not None:
            state.update({k: v for k, v in ema["shadow"].items() if k in state})
            used_ema = True
    if lora:  # the adapters of a lora: run → one echomimic-v2-lora file (train/lora_setup.py)
        from train.lora_setup import export_run_lora

        return export_run_lora(run, ck, cfg, state, Path(out_dir), {"step": meta["step"], "phase": meta["phase"],
                                                                    "ema": used_ema})
    src = json.loads((run / "sources.json").read_text())
    return export_state(state, cfg, out_dir, base_unet_dir=Path(src["base_unet_dir"]), vae_folder=Path(src["vae_folder"]),
                        audio_encoder_path=Path(src["audio_encoder_path"]) if src["audio_encoder_path"] else None,
                        base_unet_config=src["base_unet_config"], unet_additional_kwargs=src["unet_additional_kwargs"],
                        scheduler_kwargs=src["scheduler_kwargs"],
                        info={"run": str(run), "checkpoint": str(ck), "step": meta["step"], "phase": meta["phase"],
                              "ema": used_ema},
                        safetensors=safetensors, dtype=dtype)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--checkpoint", default=None, help="a checkpoint folder (default: the run's latest)")
    ap.add_argument("--no-ema", action="store_true", help="export the raw weights even if the run kept an EMA")
    ap.add_argument("--safetensors", action="store_true", help="also write .safetensors copies")
    ap.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    ap.add_argument("--lora", action="store_true",
                    help="a lora: run: write its adapters as OUT_DIR/lora.safetensors (or OUT_DIR if it ends in .safetensors)")
    a = ap.parse_args(argv)
    out = export_run(a.run_dir, a.out_dir, a.checkpoint, not a.no_ema, a.safetensors,
                     torch.float16 if a.dtype == "fp16" else None, lora=a.lora)
    print(f"exported to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
