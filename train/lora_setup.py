"""LoRA training for the APDH trainer: the ``lora:`` config section, peft adapters on the selected
modules, and writing the trained adapters as an EchoMimicV2 LoRA file (``echomimic_core.lora``).

A config with a ``lora:`` section (``enabled`` defaults to true) trains only the adapters; the
phase section still chooses the condition (pose parts, audio mode) but its ``trainable`` list is not
used. Defaults (merged under the section)::

    lora:
      rank: 16
      alpha: 16                      # scale = alpha / rank (alpha / sqrt(rank) with use_rslora)
      dropout: 0.0
      networks: [denoising_unet]     # + reference_unet (ReferenceNet attention)
      attention: [attn1, attn2]      # attn1: self + reference attention, attn2: audio cross-attention
      projections: [to_q, to_k, to_v, to_out.0]
      motion_modules: false          # also the motion modules' temporal attention (clip_frames > 1)
      extra_modules: []              # more module-name suffixes, e.g. [proj_in, proj_out, ff.net.2]
      use_rslora: false

Adapters are peft ``LoraLayer`` s injected into the networks (``inject_adapter_in_model``), so the
forward is the library's own through the same attention processors. The base model's fingerprint is
taken before injection and kept in ``RUN/lora_base.safetensors`` for the export.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn

from echomimic_core.errors import ConfigError, InputError

VERSION = 1
DEFAULTS = {"enabled": True, "rank": 16, "alpha": 16.0, "dropout": 0.0, "networks": ["denoising_unet"],
            "attention": ["attn1", "attn2"], "projections": ["to_q", "to_k", "to_v", "to_out.0"],
            "motion_modules": False, "extra_modules": [], "use_rslora": False}
LORA_NETWORKS = ("denoising_unet", "reference_unet")
BASE_FILE = "lora_base.safetensors"
_PEFT_KEY = re.compile(r"^(?P<net>[a-z_]+)\.(?P<mod>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


def lora_config(cfg: dict) -> Optional[dict]:
    """The merged, validated ``lora:`` section, or None when the run trains full weights."""
    sec = cfg.get("lora")
    if not sec or not sec.get("enabled", True):
        return None
    out = dict(DEFAULTS, **sec)
    if int(out["rank"]) < 1:
        raise ConfigError("lora.rank must be >= 1")
    bad = [n for n in out["networks"] if n not in LORA_NETWORKS]
    if bad or not out["networks"]:
        raise ConfigError(f"lora.networks must be a non-empty subset of {LORA_NETWORKS} (got {out['networks']})")
    if cfg["init"]["from"] != "official":
        raise ConfigError("a LoRA adapts trained weights: use init.from: official (init.weights_folder = the base)")
    return out


def target_modules(net_name: str, net: nn.Module, lc: dict) -> List[str]:
    """Explicit module paths inside ``net`` that get an adapter (Linear / Conv2d only)."""
    projs = "|".join(re.escape(p) for p in lc["projections"])
    attn = "|".join(re.escape(a) for a in lc["attention"])
    spatial = re.compile(rf"\.(?:{attn})\.(?:{projs})$") if attn and projs else None
    motion = re.compile(rf"\.attention_blocks\.\d+\.(?:{projs})$") if projs else None
    out = []
    for name, m in net.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        is_motion = "motion_modules." in name
        hit = any(name.endswith("." + s) for s in lc["extra_modules"]) and (not is_motion or lc["motion_modules"])
        if is_motion:
            hit = hit or bool(lc["motion_modules"] and motion is not None and motion.search(name))
        else:
            hit = hit or bool(spatial is not None and spatial.search(name))
        if hit:
            out.append(name)
    return out


@dataclass
class LoraTraining:
    """What the trainer keeps about its adapters."""

    config: dict
    targets: Dict[str, List[str]]
    base: object                    # echomimic_core.lora.BaseFingerprint of the weights before injection
    base_model: str
    trainable: Dict[str, set]

    def lora_weights(self, state: Dict[str, torch.Tensor], training: Optional[dict] = None):
        return lora_from_state(state, self.config, self.base, self.base_model, training)

    def export(self, net: nn.Module, out_dir: Path, override: Optional[dict] = None,
               training: Optional[dict] = None) -> Path:
        """Write ``out_dir/lora.safetensors`` from the live TrainNet (EMA weights via ``override``)."""
        from echomimic_core.lora import save_lora

        state = {k: v for k, v in net.state_dict().items() if ".lora_" in k}
        if override:
            state.update({k: v for k, v in override.items() if k in state})
        return save_lora(Path(out_dir) / "lora.safetensors", self.lora_weights(state, training))


def setup(cfg: dict, models, run_dir: Optional[Path] = None) -> Optional[LoraTraining]:
    """Inject the adapters of ``cfg['lora']`` into ``models`` (trainer ``Models``), freeze everything
    else; None (and nothing changed) without a ``lora:`` section. ``run_dir``: where the base
    fingerprint is written (main process only)."""
    lc = lora_config(cfg)
    if lc is None:
        return None
    from peft import LoraConfig, inject_adapter_in_model

    from echomimic_core.lora import fingerprint

    base = fingerprint(models)
    nets = {"reference_unet": models.reference_unet, "denoising_unet": models.denoising_unet,
            "pose_encoder": models.pose_encoder}
    for m in nets.values():
        m.requires_grad_(False)
    targets = {}
    for name in lc["networks"]:
        targets[name] = target_modules(name, nets[name], lc)
        if not targets[name]:
            raise ConfigError(f"lora: no module of {name} matches attention={lc['attention']} "
                             f"projections={lc['projections']} extra_modules={lc['extra_modules']}")
        pc = LoraConfig(r=int(lc["rank"]), lora_alpha=float(lc["alpha"]), lora_dropout=float(lc["dropout"]),
                        target_modules=targets[name], use_rslora=bool(lc["use_rslora"]), init_lora_weights=True)
        inject_adapter_in_model(pc, nets[name], adapter_name="default")
    trainable = {}
    for name, m in nets.items():
        trainable[name] = set()
        for pname, p in m.named_parameters():
            p.requires_grad_(".lora_" in pname)
            if p.requires_grad:
                trainable[name].add(pname)
    base_model = Path(cfg["init"].get("weights_folder") or cfg["init"]["base_folder"]).name
    if run_dir is not None:
        save_base(Path(run_dir) / BASE_FILE, base, base_model)
    return LoraTraining(lc, targets, base, base_model, trainable)


def save_base(path: Path, base, base_model: str) -> None:
    from echomimic_core.lora.fileformat import dtype_name
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"samples": base.samples.contiguous()}, str(path),
              metadata={"hash": base.hash, "structure": base.structure, "dtype": dtype_name(base.dtype),
                        "base_model": base_model})


def load_base(path: Path):
    from safetensors import safe_open

    from echomimic_core.lora import BaseFingerprint
    from echomimic_core.lora.fileformat import _DTYPES

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        samples = f.get_tensor("samples")
    return BaseFingerprint(meta["structure"], meta["hash"], samples, _DTYPES[meta["dtype"]]), meta["base_model"]


def lora_from_state(state: Dict[str, torch.Tensor], lc: dict, base, base_model: str,
                    training: Optional[dict] = None):
    """TrainNet state (peft names ``<net>.<module>.lora_A.default.weight``) → ``LoraWeights``."""
    import echomimic_core
    from echomimic_core.lora import LoraMetadata, LoraWeights
    from echomimic_core.lora.fileformat import dtype_name

    halves: Dict[tuple, dict] = {}
    for k, v in state.items():
        m = _PEFT_KEY.match(k)
        if m:
            halves.setdefault((m["net"], m["mod"]), {})[m["ab"]] = v.detach().float().cpu().contiguous()
    modules = {key: (p["A"], p["B"]) for key, p in sorted(halves.items()) if set(p) == {"A", "B"}}
    if not modules:
        raise InputError("the training state holds no LoRA adapter weights (was the run trained with a lora: "
                         "section?)")
    targets = {k: lc[k] for k in ("networks", "attention", "projections", "motion_modules", "extra_modules")}
    meta = LoraMetadata(base_model_hash=base.hash, base_structure=base.structure, rank=int(lc["rank"]),
                        alpha=float(lc["alpha"]), scaling="alpha/sqrt(r)" if lc["use_rslora"] else "alpha/r",
                        base_dtype=dtype_name(base.dtype), base_model=base_model, targets=targets,
                        networks=tuple(sorted({n for n, _ in modules})),
                        trainer_version=f"echomimic_core {echomimic_core.__version__} / train.lora_setup {VERSION}",
                        training=dict(training or {}, dropout=float(lc["dropout"])))
    return LoraWeights(meta, modules, base)


def export_run_lora(run: Path, ck: Path, cfg: dict, state: Dict[str, torch.Tensor], out: Path,
                    training: dict) -> Path:
    """``train/export.py RUN OUT --lora``: the checkpoint's adapters → ``OUT`` (a .safetensors path,
    or a folder that receives ``lora.safetensors``)."""
    from echomimic_core.lora import save_lora

    lc = lora_config(cfg)
    if lc is None:
        raise ConfigError(f"{run}: this run has no lora: section; export full weights without --lora")
    base, base_model = load_base(run / BASE_FILE)
    out = Path(out)
    path = out if out.suffix == ".safetensors" else out / "lora.safetensors"
    return save_lora(path, lora_from_state(state, lc, base, base_model, training))
