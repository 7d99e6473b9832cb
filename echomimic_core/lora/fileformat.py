"""The EchoMimicV2 LoRA file: one ``.safetensors`` file, format ``echomimic-v2-lora/1``.

Tensors (``<network>`` is ``denoising_unet``, ``reference_unet`` or ``pose_encoder``; ``<module>`` is
the module path inside that network, so ``<module>.weight`` is the base key it changes, as in the
official ``*.pth`` files)::

    <network>.<module>.lora_A.weight   Linear [r, in]          Conv2d [r, in, kh, kw]
    <network>.<module>.lora_B.weight   Linear [out, r]         Conv2d [out, r, 1, 1]
    base_fingerprint                   float32 [N]: the base model's sampled weights (fingerprint.py)

The change of ``<module>.weight`` at strength ``s`` is ``s · scale · B @ A`` (for a Conv2d,
``B[:, :, 0, 0] @ A.flatten(1)`` reshaped to the kernel), ``scale = alpha / r`` (``alpha / sqrt(r)``
when ``scaling`` is ``"alpha/sqrt(r)"``, peft's rsLoRA), ``r`` = that module's rank. The names
``lora_A``/``lora_B`` and the scale are peft's, so a peft state dict maps onto this layout by
prefixing the network name.

Header metadata (safetensors ``__metadata__``, all strings):

=====================  ==================================================================
``format``             ``echomimic-v2-lora/1``
``base_model_hash``    sha256 hex of the base (see :mod:`.fingerprint`)
``base_structure``     sha256 hex of the base's tensor names + shapes
``base_dtype``         dtype the fingerprint was taken in (``float32``, …)
``base_model``         informational: name of the base folder
``rank``, ``alpha``    the training config's rank and alpha (per-module rank = the tensors' shape)
``scaling``            ``alpha/r`` or ``alpha/sqrt(r)``
``targets``            JSON: the training config's target selection (informational)
``networks``           JSON list of the networks the file changes
``trainer_version``    e.g. ``echomimic_core 0.1.0 / train.lora_setup 1``
``training``           JSON, optional: steps, dataset, … (informational)
=====================  ==================================================================
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from ..errors import CheckpointError
from .fingerprint import NETWORKS, BaseFingerprint

__all__ = ["FORMAT", "LoraError", "LoraMetadata", "LoraWeights", "save_lora", "load_lora", "read_lora_metadata"]

FORMAT = "echomimic-v2-lora/1"
FINGERPRINT_KEY = "base_fingerprint"
_A, _B = ".lora_A.weight", ".lora_B.weight"
SCALINGS = ("alpha/r", "alpha/sqrt(r)")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class LoraError(CheckpointError):
    """A LoRA file that cannot be read, or that does not belong to the model it is applied to."""


@dataclass
class LoraMetadata:
    base_model_hash: str
    base_structure: str
    rank: int
    alpha: float
    scaling: str = "alpha/r"
    base_dtype: str = "float32"
    base_model: str = ""
    targets: object = None
    networks: Tuple[str, ...] = ()
    trainer_version: str = ""
    training: Dict = field(default_factory=dict)

    def to_header(self) -> Dict[str, str]:
        return {"format": FORMAT, "base_model_hash": self.base_model_hash, "base_structure": self.base_structure,
                "base_dtype": self.base_dtype, "base_model": self.base_model, "rank": str(int(self.rank)),
                "alpha": repr(float(self.alpha)), "scaling": self.scaling, "targets": json.dumps(self.targets),
                "networks": json.dumps(list(self.networks)), "trainer_version": self.trainer_version,
                "training": json.dumps(self.training, default=str)}

    @classmethod
    def from_header(cls, header: Dict[str, str], path: object) -> "LoraMetadata":
        if header.get("format") != FORMAT:
            raise LoraError(f"{path}: not an EchoMimicV2 LoRA file (header format {header.get('format')!r}, "
                            f"expected {FORMAT!r}); write it with `train/export.py RUN --lora`")
        try:
            meta = cls(base_model_hash=header["base_model_hash"], base_structure=header["base_structure"],
                       rank=int(header["rank"]), alpha=float(header["alpha"]),
                       scaling=header.get("scaling", "alpha/r"), base_dtype=header.get("base_dtype", "float32"),
                       base_model=header.get("base_model", ""), targets=json.loads(header.get("targets", "null")),
                       networks=tuple(json.loads(header.get("networks", "[]"))),
                       trainer_version=header.get("trainer_version", ""),
                       training=json.loads(header.get("training", "{}") or "{}"))
        except (KeyError, ValueError) as exc:
            raise LoraError(f"{path}: LoRA header is incomplete or malformed ({type(exc).__name__}: {exc})") from None
        if meta.scaling not in SCALINGS:
            raise LoraError(f"{path}: unknown LoRA scaling {meta.scaling!r} (expected one of {SCALINGS})")
        return meta


@dataclass
class LoraWeights:
    """A loaded LoRA: ``modules[(network, module_path)] = (A, B)`` (float32, CPU)."""

    metadata: LoraMetadata
    modules: Dict[Tuple[str, str], Tuple[torch.Tensor, torch.Tensor]]
    fingerprint: BaseFingerprint
    path: Optional[str] = None

    @property
    def name(self) -> str:
        return Path(self.path).name if self.path else "<LoRA in memory>"

    def scale(self, rank: int) -> float:
        a = float(self.metadata.alpha)
        return a / math.sqrt(rank) if self.metadata.scaling == "alpha/sqrt(r)" else a / rank

    def state_dict(self) -> Dict[str, torch.Tensor]:
        out = {}
        for (net, mod), (a, b) in sorted(self.modules.items()):
            out[f"{net}.{mod}{_A}"] = a
            out[f"{net}.{mod}{_B}"] = b
        out[FINGERPRINT_KEY] = self.fingerprint.samples.float()
        return out


def save_lora(path: Union[str, os.PathLike], lora: LoraWeights) -> Path:
    """Write ``lora`` atomically as a ``.safetensors`` file (see the module docstring)."""
    from ..checkpoints import save_state_dict

    path = Path(path)
    if path.suffix != ".safetensors":
        raise LoraError(f"{path}: LoRA files are written as .safetensors")
    meta = lora.metadata  # the header's base identity always comes from the stored fingerprint
    meta.base_model_hash, meta.base_structure = lora.fingerprint.hash, lora.fingerprint.structure
    meta.base_dtype = dtype_name(lora.fingerprint.dtype)
    meta.networks = tuple(sorted({n for n, _ in lora.modules}))
    save_state_dict(lora.state_dict(), path, metadata=meta.to_header())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # the atomic temp file is 0600; a LoRA is shared like any model file
    return path


def _header(path: Path) -> Dict[str, str]:
    from safetensors import safe_open

    if not path.is_file():
        raise LoraError(f"LoRA file not found: {path}")
    if path.suffix != ".safetensors":
        raise LoraError(f"{path}: LoRA files must be .safetensors (pickled weights are not loaded)")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # SafetensorError: truncated / not a safetensors file
        raise LoraError(f"{path}: cannot be read as safetensors ({type(exc).__name__}: {exc})") from None


def read_lora_metadata(path: Union[str, os.PathLike]) -> LoraMetadata:
    """Only the header (cheap: a few kB are read); raises :class:`LoraError` for a bad file."""
    path = Path(path)
    return LoraMetadata.from_header(_header(path), path)


def load_lora(path: Union[str, os.PathLike]) -> LoraWeights:
    """Read and validate a LoRA file (key layout, pairs, ranks); the base check is done on apply."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_lora_metadata(path)
    tensors = load_file(str(path), device="cpu")
    samples = tensors.pop(FINGERPRINT_KEY, None)
    if samples is None:
        raise LoraError(f"{path}: no {FINGERPRINT_KEY} tensor (the base model's fingerprint)")
    halves: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        suffix = _A if key.endswith(_A) else _B if key.endswith(_B) else None
        net, _, mod = key[: -len(suffix)].partition(".") if suffix else ("", "", "")
        if suffix is None or net not in NETWORKS or not mod:
            raise LoraError(f"{path}: unexpected tensor {key!r} (expected <network>.<module>.lora_A/B.weight with "
                            f"network in {NETWORKS})")
        halves.setdefault((net, mod), {})[suffix] = t.float()
    modules = {}
    for (net, mod), pair in sorted(halves.items()):
        if set(pair) != {_A, _B}:
            raise LoraError(f"{path}: {net}.{mod} has only one of lora_A / lora_B")
        a, b = pair[_A], pair[_B]
        if a.ndim not in (2, 4) or b.ndim != a.ndim or b.shape[1] != a.shape[0] or \
                (a.ndim == 4 and tuple(b.shape[2:]) != (1, 1)):
            raise LoraError(f"{path}: {net}.{mod}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not form "
                            f"a low-rank pair")
        modules[(net, mod)] = (a, b)
    if not modules:
        raise LoraError(f"{path}: the file holds no LoRA weights")
    fp = BaseFingerprint(meta.base_structure, meta.base_model_hash, samples.float(),
                         _DTYPES.get(meta.base_dtype, torch.float32))
    return LoraWeights(meta, modules, fp, str(path))


def dtype_name(dtype: torch.dtype) -> str:
    return next((k for k, v in _DTYPES.items() if v == dtype), "float32")
