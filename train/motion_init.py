"""Stage-2 motion-module initialisation from pretrained temporal weights (`init.motion_module`).

The paper initialises the motion modules "from EchoMimic"; EchoMimic V1, EchoMimic V2 and AnimateDiff
v1/v2 (`mm_sd_v15_v2.ckpt`) all use the same original AnimateDiff "Vanilla" layout, which is also the
layout of `echomimic_core.models.motion_module` (so those files copy name by name). diffusers'
`MotionAdapter` (`animatediff-motion-adapter-v1-5-2`) stores the same tensors under other names;
this module maps them. Written by hand because no library ships a diffusers → original-layout mapping.

Accepted files (`.safetensors`, `.pth`, `.ckpt`; read with `weights_only=True`):

* a plain state dict, or a training checkpoint `{"state_dict": {...}, "global_step": ...}`;
  a `module.` (DDP) or `unet.` prefix is stripped;
* only keys containing `motion_modules.` are used (a whole denoiser state dict works too).

Key mapping, per insertion point `P = {down_blocks.i|mid_block|up_blocks.i}.motion_modules.j`:

| original AnimateDiff / EchoMimic (copied as is)                            | diffusers MotionAdapter           |
|----------------------------------------------------------------------------|-----------------------------------|
| `P.temporal_transformer.norm.*`                                            | `P.norm.*`                        |
| `P.temporal_transformer.proj_in.*` / `proj_out.*`                          | `P.proj_in.*` / `P.proj_out.*`    |
| `P.temporal_transformer.transformer_blocks.k.attention_blocks.0.*`         | `P.transformer_blocks.k.attn1.*`  |
| `P.temporal_transformer.transformer_blocks.k.attention_blocks.1.*`         | `P.transformer_blocks.k.attn2.*`  |
| `P.temporal_transformer.transformer_blocks.k.norms.0.*` / `norms.1.*`      | `P....k.norm1.*` / `norm2.*`      |
| `P.temporal_transformer.transformer_blocks.k.ff_norm.*`                    | `P....k.norm3.*`                  |
| `P.temporal_transformer.transformer_blocks.k.ff.*`                         | `P....k.ff.*`                     |
| `P.temporal_transformer.transformer_blocks.k.attention_blocks.{0,1}.pos_encoder.pe` | `P....k.pos_embed.pe` (one table, used by both) |

The position tables `pe` [1, max_len, C] are fixed sinusoids (not learnt): a file with a shorter
table (AnimateDiff v1: 24 frames) fills the rows it has and keeps ours for the rest, so the
denoiser's own `max_len` stays. Every other tensor must match in shape: a file for another UNet size
is an error naming the first mismatch, not a silent partial load.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from echomimic_core.errors import InputError
from echomimic_core.models import MOTION_MODULE_KEY as MOTION  # the denoiser's motion-module key marker

_DIFFUSERS_RULES = [  # (pattern after "P.", replacement after "P.temporal_transformer.")
    (re.compile(r"^transformer_blocks\.(\d+)\.attn1\."), r"transformer_blocks.\1.attention_blocks.0."),
    (re.compile(r"^transformer_blocks\.(\d+)\.attn2\."), r"transformer_blocks.\1.attention_blocks.1."),
    (re.compile(r"^transformer_blocks\.(\d+)\.norm1\."), r"transformer_blocks.\1.norms.0."),
    (re.compile(r"^transformer_blocks\.(\d+)\.norm2\."), r"transformer_blocks.\1.norms.1."),
    (re.compile(r"^transformer_blocks\.(\d+)\.norm3\."), r"transformer_blocks.\1.ff_norm."),
    (re.compile(r"^transformer_blocks\.(\d+)\.ff\."), r"transformer_blocks.\1.ff."),
    (re.compile(r"^(norm|proj_in|proj_out)\."), r"\1."),
]
_SPLIT = re.compile(r"^(.*?motion_modules\.\d+)\.(.*)$")


@dataclass
class MotionInitReport:
    layout: str                      # "animatediff" (original / EchoMimic) or "diffusers"
    copied: int = 0                  # tensors copied (pe tables counted once per table)
    pe_partial: list[str] = field(default_factory=list)   # tables shorter in the file than in the denoiser
    not_in_file: list[str] = field(default_factory=list)  # denoiser motion keys the file does not have
    unused: list[str] = field(default_factory=list)       # file keys with no denoiser counterpart


def read_motion_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The motion-module tensors of a file, with the wrappers/prefixes above removed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"init.motion_module: {path} not found (an AnimateDiff mm_sd_v15_v2.ckpt, or an "
                                "EchoMimic V1/V2 motion_module.pth; set init.motion_module: null to start from zero)")
    from echomimic_core.checkpoints import read_checkpoint

    sd = read_checkpoint(path)  # the one safe reader: safetensors, or a weights_only pickle (never code)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor) or MOTION not in k:
            continue
        for prefix in ("module.", "unet."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    if not out:
        raise InputError(f"{path}: no key containing {MOTION!r}; not a motion-module file")
    return out


def to_original_layout(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """diffusers MotionAdapter names → original AnimateDiff names (identity for original-layout files)."""
    if any(".temporal_transformer." in k for k in sd):
        return dict(sd), "animatediff"
    out = {}
    for k, v in sd.items():
        m = _SPLIT.match(k)
        if not m:
            continue
        head, rest = m.groups()
        pe = re.match(r"^transformer_blocks\.(\d+)\.pos_embed\.pe$", rest)
        if pe:
            for a in (0, 1):
                out[f"{head}.temporal_transformer.transformer_blocks.{pe.group(1)}.attention_blocks.{a}.pos_encoder.pe"] = v
            continue
        for pat, rep in _DIFFUSERS_RULES:
            if pat.match(rest):
                out[f"{head}.temporal_transformer.{pat.sub(rep, rest)}"] = v
                break
    return out, "diffusers"


@torch.no_grad()
def init_motion_modules(denoiser: nn.Module, path: str | Path) -> MotionInitReport:
    """Copy a motion-module file into `denoiser`'s motion modules (rules in the module docstring)."""
    src, layout = to_original_layout(read_motion_file(path))
    own = {k: v for k, v in denoiser.state_dict().items() if MOTION in k}
    rep = MotionInitReport(layout)
    new = {}
    for k, target in own.items():
        if k not in src:
            rep.not_in_file.append(k)
            continue
        v = src[k]
        if k.endswith(".pos_encoder.pe") and v.ndim == 3 and v.shape[0::2] == target.shape[0::2] \
                and v.shape[1] != target.shape[1]:
            n = min(v.shape[1], target.shape[1])
            t = target.clone()
            t[:, :n] = v[:, :n].to(t.dtype)
            new[k] = t
            if v.shape[1] < target.shape[1]:
                rep.pe_partial.append(k)
        elif tuple(v.shape) != tuple(target.shape):
            raise InputError(f"{path}: {k} has shape {tuple(v.shape)} but this denoiser's is {tuple(target.shape)}; "
                             "the file is for another UNet size (use the file of the UNet you train)")
        else:
            new[k] = v.to(target.dtype)
    rep.unused = sorted(set(src) - set(own))
    if not new:
        raise InputError(f"{path}: none of its {len(src)} motion-module keys names a motion module of this denoiser")
    denoiser.load_state_dict(new, strict=False)
    rep.copied = len(new)
    if rep.not_in_file:
        warnings.warn(f"{path}: {len(rep.not_in_file)} of {len(own)} motion-module tensors are not in the file and "
                      f"keep their fresh init (e.g. {rep.not_in_file[0]}; AnimateDiff v1 has no mid-block module)")
    return rep
