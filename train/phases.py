"""Phase definitions of the APDH recipe: configs, what is trainable, pose/audio conditions.

A phase config (`train/configs/*.yaml`) is merged over `DEFAULTS` below. The `phase` section says
what the phase does; everything numeric (iterations, lr, batch, resolution, clip length) lives in
`optim`/`data`/`run` with the paper's numbers as defaults.

phase:
  stage: 1 | 2
  pose_parts: init | no_lips | no_head | hands   (which keypoints are drawn on the pose map)
  pose_dropout: [p_start, p_end]                   (probability a sample's pose map is blanked,
                                                    linear over the phase's max_steps)
  audio: muted | partial | global                  (audio cross-attention off / masked / everywhere)
  region: lips | head | null                       (mask for `audio: partial`)
  trainable: list of selectors (below)
  frozen: list of selectors removed from the trainable set

Selectors (parameter groups of the three trained networks):
  reference_unet              every ReferenceNet parameter
  pose_encoder                every PoseEncoder parameter
  denoising_unet.spatial      every denoiser parameter that is not in a motion module
  denoising_unet.audio        the audio cross-attention (attn2.* and norm2.* of the transformer blocks)
  denoising_unet.motion       the motion modules (keys containing "motion_modules.")
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from echomimic_core.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

DEFAULTS: dict[str, Any] = {
    "run": {
        "output_dir": "runs/default",
        "seed": 42,                  # model init; the sample stream also mixes in `sample_stream`
        # which sample stream (clip/frames/noise/t/dropouts) the run sees:
        #   phase — seeded by (seed, phase.name): consecutive phases see different samples
        #   seed  — by the seed alone (before phases were mixed in; the demo model's recipe)
        #   any other string — mixed in as given (e.g. a second run of the same phase on new samples)
        "sample_stream": "phase",
        "max_steps": 10000,          # paper: 10k per stage-1 phase, 30k for stage 2
        "checkpoint_every": 1000,
        "keep_checkpoints": 2,
        "log_every": 10,
        "export_at_end": True,
        "progress_bar": True,
        "tensorboard": False,        # also log to RUN/tensorboard (needs the tensorboard package)
    },
    # renders from fixed inputs during training (train/monitor.py); every: 0 = off
    "validation": {"every": 0, "clip": None, "reference_frame": 0, "frames": 12, "steps": 6, "guidance": 2.0,
                   "seed": 0, "use_ema": True, "at_end": True},
    "init": {
        # where the weights come from:
        #   sd        — SD-image-variations UNet for both UNets + sd-vae (stage 1 from scratch)
        #   official  — an official-layout folder (released EchoMimicV2 weights, or a previous phase's export)
        "from": "sd",
        "base_folder": "pretrained_weights",   # holds sd-image-variations-diffusers/ and sd-vae-ft-mse/
        "weights_folder": None,                # official-layout folder for from: official (default base_folder)
        "motion_module": None,                 # stage 2: pretrained motion modules (train/motion_init.py); None = zero
        "variant": None,
    },
    "data": {
        "roots": [],
        "kinds": ["halfbody"],
        "resolution": 768,
        "clip_frames": 1,            # 24 in stage 2
        "frame_stride": 1,
        "num_workers": 2,
        "repeat": 1,
        "hue_rotation": 0.0,         # probability of a random hue rotation of reference + targets (together)
        "max_bad_fraction": 0.05,    # damaged clips are skipped and logged (RUN/bad_clips.jsonl) up to this share
        "min_ref_gap": None,         # None: reference = any other frame; N: >= N frames from every target
        "augment": {"prob": 0.0,     # probability of a random square crop (same for reference, targets,
                    "scale": [0.85, 1.0]},  # pose, masks); scale = crop side / frame side (train/augment.py)
        "fixed_batch": False,        # debugging: repeat the first batch forever (overfit check)
        "audio_features": "auto",    # auto | cached | compute
        "audio_encoder": None,       # whisper tiny.pt path for compute (default base_folder/audio_processor/tiny.pt)
    },
    "phase": {
        "name": "initial_pose",
        "stage": 1,
        "pose_parts": "init",
        "pose_dropout": [0.0, 0.0],
        "audio": "muted",
        "region": None,
        "trainable": ["reference_unet", "pose_encoder", "denoising_unet.spatial"],
        "frozen": ["denoising_unet.audio"],
    },
    "optim": {
        "optimizer": "adamw",        # adamw | adamw8bit (bitsandbytes, CUDA) | sgd
        "lr": 1.0e-5,
        "betas": [0.9, 0.999],
        "weight_decay": 1.0e-2,
        "eps": 1.0e-8,
        "warmup_steps": 1,
        "max_grad_norm": 1.0,
        "per_device_batch": 4,       # paper: 4 per GPU on 8 GPUs
        "grad_accum": 1,
    },
    "training": {
        "mixed_precision": None,     # None = the launch config's (accelerate launch) or "no"; no | fp16 | bf16 wins
        "gradient_checkpointing": False,
        "cfg_drop": 0.1,             # drop reference + audio + pose jointly (the sampler's uncond branch)
        "audio_drop": 0.0,           # additionally drop audio alone
        "noise_offset": 0.0,
        "min_snr_gamma": None,
        "latent": "mean",            # mean | sample (VAE posterior)
        "ema": {"enabled": False, "decay": 0.9999, "every": 1},
        "find_unused_parameters": True,
        "timestep_range": [0, 1000],  # sample t uniformly in [lo, hi) — tests narrow it
    },
    "losses": {
        "phd": {"enabled": True, "pose_weight": 0.1, "detail_weight": 0.1, "lpips_weight": 0.1,
                "bounds": [0.9, 0.3], "pixel_size": None,
                "latent_crop": None},        # e.g. 48: decode only a random 48×48 latent crop (384² px) for PhD
        # backbone: pose_encoder | dwpose_onnx:<dw-ll_ucoco_384.onnx> | torchscript:<file> (train/losses.py);
        # compare (dwpose_onnx): simcc | coords (train/pose_keypoints.py)
        "pose": {"backbone": "pose_encoder", "compare": "simcc"},
        "lpips": {"net": "alex", "backbone": None, "heads": None},
        "canny": {"sigma": 1.0, "low": 100.0, "high": 200.0},
    },
}

SELECTORS = ("reference_unet", "pose_encoder", "denoising_unet.spatial", "denoising_unet.audio",
             "denoising_unet.motion")
POSE_PARTS = ("init", "no_lips", "no_head", "hands")
AUDIO_MODES = ("muted", "partial", "global")


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optim.lr=1e-4' → (['optim', 'lr'], 1e-4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, val = text.split("=", 1)
    value = yaml.safe_load(val)
    if isinstance(value, str):  # YAML 1.1 reads "2e-5" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip().split("."), value


def set_path(cfg: dict, path: list[str], value: Any, strict: bool = False) -> None:
    """Set ``cfg[a][b]... = value``. ``strict`` (the ``--set`` overrides) refuses a key that a non-empty
    section does not have, so a misspelt ``optim.lrr=5`` is an error naming the close match instead of a
    silently ignored value; empty sections (free-form ones) take any key."""
    d = cfg
    for depth, k in enumerate(path):
        if strict and isinstance(d, dict) and d and k not in d:
            import difflib

            where = ".".join(path[:depth]) or "the config"
            close = difflib.get_close_matches(k, [str(x) for x in d], n=1)
            hint = f"; did you mean {'.'.join(path[:depth] + close)}?" if close else f"; {where} has {sorted(d)}"
            raise ConfigError(f"unknown config key {'.'.join(path)}{hint}")
        if depth == len(path) - 1:
            break
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"config key {'.'.join(path[:depth + 1])} is a value, not a section; cannot set "
                             f"{'.'.join(path)}")
    d[path[-1]] = value


def resolve_config_path(name: str | Path) -> Path:
    p = Path(name)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"config {name} not found (looked in . and {CONFIG_DIR})")


def load_config(name: str | Path | dict | None = None, overrides: list[str] | dict | None = None) -> dict:
    """DEFAULTS ⊕ (yaml file, following `base:` chains) ⊕ overrides; validated."""
    if isinstance(name, dict):
        user = name
    elif name is None:
        user = {}
    else:
        user = _read_yaml_chain(resolve_config_path(name))
    cfg = deep_merge(DEFAULTS, user)
    if isinstance(overrides, dict):
        cfg = deep_merge(cfg, overrides)
    else:
        for o in overrides or []:
            path, val = parse_override(o)
            set_path(cfg, path, val, strict=True)
    if cfg["training"]["mixed_precision"] is False:  # YAML 1.1 reads an unquoted `no` as false
        cfg["training"]["mixed_precision"] = "no"
    validate(cfg)
    return cfg


def _read_yaml_chain(path: Path) -> dict:
    data = yaml.safe_load(path.read_text()) or {}
    base = data.pop("base", None)
    if base:
        parent = _read_yaml_chain(resolve_config_path(path.parent / base if not Path(base).is_absolute() else base))
        data = deep_merge(parent, data)
    return data


def validate(cfg: dict) -> None:
    ph = cfg["phase"]
    if ph["stage"] not in (1, 2):
        raise ConfigError("phase.stage must be 1 or 2")
    if ph["pose_parts"] not in POSE_PARTS:
        raise ConfigError(f"phase.pose_parts must be one of {POSE_PARTS}")
    if ph["audio"] not in AUDIO_MODES:
        raise ConfigError(f"phase.audio must be one of {AUDIO_MODES}")
    if ph["audio"] == "partial" and ph.get("region") not in ("lips", "head"):
        raise ConfigError("phase.audio: partial needs phase.region: lips | head")
    for s in list(ph["trainable"]) + list(ph.get("frozen") or []):
        if s not in SELECTORS:
            raise ConfigError(f"unknown trainable selector {s!r}; use {SELECTORS}")
    p0, p1 = ph["pose_dropout"]
    if not (0 <= p0 <= 1 and 0 <= p1 <= 1):
        raise ConfigError("phase.pose_dropout values must be probabilities")
    if ph["stage"] == 1 and cfg["data"]["clip_frames"] != 1:
        raise ConfigError("stage 1 trains single frames: data.clip_frames must be 1")
    if cfg["training"]["mixed_precision"] not in (None, "no", "fp16", "bf16"):
        raise ConfigError("training.mixed_precision must be null (the launch config decides) | no | fp16 | bf16")
    from train.augment import check_augment

    check_augment(cfg["data"]["augment"])
    from train.losses import check_pose_loss

    check_pose_loss(cfg["losses"]["pose"])
    gap = cfg["data"]["min_ref_gap"]
    if gap is not None and (isinstance(gap, bool) or not isinstance(gap, int) or gap < 0):
        raise ConfigError(f"data.min_ref_gap must be null or a frame count >= 0, got {gap!r}")
    from train.optim import OPTIMIZERS

    if cfg["optim"].get("optimizer", "adamw") not in OPTIMIZERS:
        raise ConfigError(f"optim.optimizer must be one of {OPTIMIZERS}")
    if not isinstance(cfg["run"].get("sample_stream"), str) or not cfg["run"]["sample_stream"]:
        raise ConfigError("run.sample_stream must be phase | seed | a non-empty string")


# ------------------------------------------------------------------------------------------------
# trainable parameters


def _matches(selector: str, module: str, name: str) -> bool:
    if selector == "reference_unet":
        return module == "reference_unet"
    if selector == "pose_encoder":
        return module == "pose_encoder"
    if module != "denoising_unet":
        return False
    from echomimic_core.models import is_audio_attention_key, is_motion_module_key

    if selector == "denoising_unet.motion":
        return is_motion_module_key(name)
    if selector == "denoising_unet.spatial":
        return not is_motion_module_key(name)
    if selector == "denoising_unet.audio":
        return is_audio_attention_key(name)  # transformer blocks' attn2/norm2 (not the ResNets' norm2)
    return False


def trainable_names(phase: dict, named: dict[str, list[str]]) -> dict[str, set[str]]:
    """{module: set of parameter names to train} from the phase's selectors.

    named: {"reference_unet": [param names], "denoising_unet": [...], "pose_encoder": [...]}"""
    out = {m: set() for m in named}
    for m, names in named.items():
        for n in names:
            if any(_matches(s, m, n) for s in phase["trainable"]) and \
                    not any(_matches(s, m, n) for s in (phase.get("frozen") or [])):
                out[m].add(n)
    return out


def apply_trainable(phase: dict, modules: dict) -> dict[str, set[str]]:
    """Set requires_grad on every parameter of `modules` ({name: nn.Module}) per the phase; returns the sets."""
    named = {m: [n for n, _ in mod.named_parameters()] for m, mod in modules.items()}
    sets = trainable_names(phase, named)
    for m, mod in modules.items():
        for n, p in mod.named_parameters():
            p.requires_grad_(n in sets[m])
    return sets


def stream_seed(cfg: dict) -> int | str:
    """The seed of the run's sample stream (every per-sample random choice is keyed by it and the sample
    number). `run.sample_stream: phase` mixes the phase name in, so two phases with the same `run.seed`
    do not replay the same clips, frames, noise and timesteps; `seed` keeps the seed alone."""
    from train.data import seed_of

    seed, key = cfg["run"]["seed"], cfg["run"]["sample_stream"]
    if key == "seed":
        return seed
    return seed_of(seed, "stream", cfg["phase"]["name"] if key == "phase" else key)


def pose_dropout_at(phase: dict, step: int, max_steps: int) -> float:
    """Linear ramp of the pose-dropout probability from p_start (step 0) to p_end (last step)."""
    p0, p1 = phase["pose_dropout"]
    if max_steps <= 1:
        return float(p1)
    frac = min(max(step / (max_steps - 1), 0.0), 1.0)
    return float(p0 + (p1 - p0) * frac)
