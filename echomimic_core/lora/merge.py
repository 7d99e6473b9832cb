"""Merging LoRAs into full weights: a model folder + LoRA file(s) → a new official-layout folder.

    python -m echomimic_core.lora merge BASE_DIR LORA[:STRENGTH] [LORA[:STRENGTH] ...] OUT_DIR
        [--variant normal|acc] [--dtype fp32|fp16|bf16]
    python -m echomimic_core.lora info LORA

The output folder loads with :func:`echomimic_core.checkpoints.load_models` like the base: the four
EchoMimicV2 weight files as ``.safetensors`` (every key, so no base SD weights are needed), the
base UNet ``config.json``, the VAE, the audio encoder, ``inference_config.json``, and
``lora_merge.json`` (which LoRAs at which strengths, their metadata, the base hash).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import torch

from ..errors import EchoMimicError, InputError
from .fileformat import read_lora_metadata
from .patcher import apply_loras, parse_lora_spec

__all__ = ["merge_loras", "main"]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _copy(src: Path, dst: Path) -> None:
    """Files only (no permission bits: the source may be read-only)."""
    if src.is_dir():
        for p in sorted(src.rglob("*")):
            if p.is_file():
                (dst / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, dst / p.relative_to(src))
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def merge_loras(base_dir: Union[str, os.PathLike], specs: Sequence[Union[str, Tuple[str, float]]],
                out_dir: Union[str, os.PathLike], variant: str = "normal", dtype: torch.dtype = torch.float32
                ) -> Path:
    """Write ``base_dir`` with ``specs`` merged (float32 arithmetic, saved in ``dtype``) into ``out_dir``."""
    from ..checkpoints import VARIANTS, load_models, save_state_dict
    from ..models import split_motion_state_dict

    base, out = Path(base_dir), Path(out_dir)
    if out.resolve() == base.resolve():
        raise InputError(f"the merge output {out} must not be the base folder (its weights would be overwritten)")
    pairs: List[Tuple[str, float]] = [parse_lora_spec(s) if isinstance(s, str) else (str(s[0]), float(s[1]))
                                      for s in specs]
    if not pairs:
        raise InputError("merge needs at least one LoRA file")
    for path, _ in pairs:
        read_lora_metadata(path)  # a bad file fails before the base is loaded
    models = load_models(base, variant=variant, dtype=torch.float32, device="cpu")
    patcher = apply_loras(models, pairs)
    den, mm = VARIANTS[variant]

    def save(state, stem):
        state = {k: (v.to(dtype) if v.is_floating_point() and not k.endswith("pos_encoder.pe") else v)
                 for k, v in state.items()}
        save_state_dict(state, out / f"{stem}.safetensors")

    out.mkdir(parents=True, exist_ok=True)
    motion, spatial = split_motion_state_dict(models.denoising_unet.state_dict())
    save(models.reference_unet.state_dict(), "reference_unet")
    save(spatial, den)
    save(motion, mm)
    save(models.pose_encoder.state_dict(), "pose_encoder")
    files = models.files
    unet_cfg = out / "sd-image-variations-diffusers" / "unet" / "config.json"
    _copy(Path(files.base_unet_dir) / "config.json", unet_cfg)
    if Path(files.vae).is_dir():
        _copy(Path(files.vae), out / "sd-vae-ft-mse")
    else:  # a single diffusers-format VAE file: write a folder the loader finds
        models.vae.save_pretrained(str(out / "sd-vae-ft-mse"), safe_serialization=True)
    audio = Path(files.audio_encoder)
    _copy(audio, out / "audio_processor" / ("whisper-tiny" if audio.is_dir() else "tiny.pt"))
    (out / "inference_config.json").write_text(json.dumps(
        {"unet_additional_kwargs": models.unet_additional_kwargs,
         "noise_scheduler_kwargs": models.scheduler_kwargs}, indent=1))
    (out / "lora_merge.json").write_text(json.dumps({
        "base_folder": str(base), "variant": variant, "base_model_hash": patcher.base.hash,
        "dtype": str(dtype).replace("torch.", ""),
        "loras": [{"file": lora.path, "strength": s, "metadata": lora.metadata.to_header()}
                  for lora, s in patcher.stack]}, indent=1))
    patcher.unpatch()
    return out


def _info(path: str) -> int:
    from .fileformat import load_lora

    lora = load_lora(path)
    meta = lora.metadata.to_header()
    for key in ("format", "base_model", "base_model_hash", "rank", "alpha", "scaling", "networks", "targets",
                "trainer_version", "training"):
        print(f"{key:16} {meta.get(key, '')}")
    nets = {}
    for (net, _mod), (a, b) in lora.modules.items():
        nets.setdefault(net, [0, 0])
        nets[net][0] += 1
        nets[net][1] += a.numel() + b.numel()
    for net, (n, params) in sorted(nets.items()):
        print(f"{net:16} {n} modules, {params:,} parameters")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m echomimic_core.lora", description="EchoMimicV2 LoRA files")
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("merge", help="merge LoRA(s) into full weights (a new model folder)")
    m.add_argument("base_dir", help="base model folder (official pretrained_weights layout)")
    m.add_argument("items", nargs="+", metavar="LORA[:STRENGTH] ... OUT_DIR",
                   help="one or more LoRA files (optional :strength, default 1), then the output folder")
    m.add_argument("--variant", choices=("normal", "acc"), default="normal")
    m.add_argument("--dtype", choices=sorted(_DTYPES), default="fp32", help="dtype of the written weights")
    i = sub.add_parser("info", help="print a LoRA file's metadata")
    i.add_argument("lora")
    args = ap.parse_args(argv)
    try:
        if args.command == "info":
            return _info(args.lora)
        if len(args.items) < 2:
            ap.error("merge needs BASE_DIR, at least one LORA and OUT_DIR")
        out = merge_loras(args.base_dir, args.items[:-1], args.items[-1], args.variant, _DTYPES[args.dtype])
    except EchoMimicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged into {out}")
    return 0
