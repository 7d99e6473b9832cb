"""Applying LoRAs to loaded networks: strength, stacking, removal, without reloading the base.

Why plain weight deltas and not peft at inference: peft (used by the trainer) wraps every target
module (``to_q`` becomes ``to_q.base_layer`` + adapters), which renames the state-dict keys the
loaders, the fingerprint and ComfyUI's key-based patching rely on, and costs extra matmuls in every
forward; its ``unmerge`` subtracts the delta again, which is not bit-exact. Here each target weight
is replaced in place by ``W0 + Σ_i s_i · scale_i · B_i @ A_i`` (computed in float32, cast to the
weight's dtype), and ``W0`` is kept as a backup (CPU by default) — ComfyUI's ModelPatcher does the
same. So sampling runs at the base model's speed, removing a LoRA restores ``W0`` exactly, and a
stack whose strengths are all 0 leaves the weights untouched (bit for bit).

One :class:`LoraPatcher` owns the patches of one model set; :meth:`LoraPatcher.attached` finds (or
creates) it on the networks, so two callers (e.g. two ComfyUI branches with different LoRA stacks)
share it and each run simply sets the stack it wants with :meth:`LoraPatcher.set_stack`.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import InputError
from .fileformat import LoraError, LoraWeights, load_lora
from .fingerprint import BaseFingerprint, compare, fingerprint, networks_of

__all__ = ["LoraPatcher", "apply_loras", "parse_lora_spec", "lora_delta", "check_lora"]

_ATTR = "_echomimic_lora_patcher"  # on the denoising UNet: the patcher that owns this model set's weights
Spec = Union[str, os.PathLike, LoraWeights, Tuple[Union[str, os.PathLike, LoraWeights], float]]


def parse_lora_spec(spec: str) -> Tuple[str, float]:
    """``"FILE[:STRENGTH]"`` → ``(FILE, strength)``; the suffix is a strength only if it parses as a
    number (so ``C:\\x.safetensors`` keeps its drive letter). Default strength 1.0."""
    head, sep, tail = str(spec).rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return str(spec), 1.0


def _as_pairs(specs: Iterable[Spec]) -> List[Tuple[LoraWeights, float]]:
    out = []
    for spec in specs:
        strength = 1.0
        if isinstance(spec, tuple):
            spec, strength = spec
        elif isinstance(spec, (str, os.PathLike)) and not isinstance(spec, LoraWeights):
            spec, strength = parse_lora_spec(str(spec))
        lora = spec if isinstance(spec, LoraWeights) else load_lora(spec)
        strength = float(strength)
        if not torch.isfinite(torch.tensor(strength)):
            raise InputError(f"LoRA strength must be a finite number (got {strength} for {lora.name})")
        out.append((lora, strength))
    return out


def lora_delta(a: torch.Tensor, b: torch.Tensor, scale: float, shape: Sequence[int]) -> torch.Tensor:
    """``scale · B @ A`` shaped like the weight: Linear ``[out, in]`` or Conv2d ``[out, in, kh, kw]`` (float32)."""
    if a.ndim == 2:
        return (b.float() @ a.float()) * scale
    return ((b.float()[:, :, 0, 0] @ a.float().flatten(1)) * scale).view(*shape)


def _target(networks: Dict[str, nn.Module], net: str, mod: str) -> Optional[nn.Module]:
    if net not in networks:
        return None
    try:
        m = networks[net].get_submodule(mod)
    except AttributeError:
        return None
    return m if isinstance(m, (nn.Linear, nn.Conv2d)) else None


def check_lora(lora: LoraWeights, networks: Dict[str, nn.Module], base: BaseFingerprint) -> None:
    """Raise :class:`LoraError` (one line naming the mismatch) unless ``lora`` fits these networks."""
    why = compare(lora.fingerprint, base)
    if why is not None:
        trained = lora.metadata.base_model or "another base"
        raise LoraError(f"LoRA {lora.name} was trained for base model {lora.fingerprint.short} ({trained}) but "
                        f"this model is {base.short}: {why}. Use the base model it was trained on.")
    bad = []
    for (net, mod), (a, b) in lora.modules.items():
        m = _target(networks, net, mod)
        if m is None:
            bad.append(f"{net}.{mod} (no Linear/Conv2d there)")
            continue
        w = m.weight
        expect_a = (w.shape[1],) + tuple(w.shape[2:]) if w.ndim == 4 else (w.shape[1],)
        if tuple(a.shape[1:]) != expect_a or b.shape[0] != w.shape[0]:
            bad.append(f"{net}.{mod} (weight {tuple(w.shape)}, lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)})")
    if bad:
        raise LoraError(f"LoRA {lora.name}: {len(bad)} target module(s) do not match this model, e.g. "
                        f"{'; '.join(bad[:3])}")


class LoraPatcher:
    """The LoRA stack applied to one model set (``EchoMimicModels``, the trainer's ``Models`` or a
    ``{name: module}`` mapping of ``reference_unet`` / ``denoising_unet`` / ``pose_encoder``).

    ``backup_device``: where the original weights of patched modules wait (default CPU, so patching
    costs no accelerator memory beyond the patched weights themselves)."""

    def __init__(self, models: Any, backup_device: Union[str, torch.device] = "cpu"):
        self.networks = networks_of(models)
        if "denoising_unet" not in self.networks:
            raise InputError("LoraPatcher needs the model set's denoising_unet")
        owner = self.networks["denoising_unet"].__dict__.get(_ATTR)
        if owner is not None and owner.stack:
            raise LoraError("these networks are already patched by another LoraPatcher; use "
                            "LoraPatcher.attached(models) or unpatch() it first")
        self.backup_device = torch.device(backup_device)
        self.base = fingerprint(self.networks)  # the unpatched weights
        self.stack: List[Tuple[LoraWeights, float]] = []
        self._backup: Dict[Tuple[str, str], torch.Tensor] = {}
        self.networks["denoising_unet"].__dict__[_ATTR] = self

    @classmethod
    def attached(cls, models: Any, **kwargs) -> "LoraPatcher":
        """The patcher owning these networks, created (fingerprint taken) on first use."""
        den = networks_of(models).get("denoising_unet")
        owner = den.__dict__.get(_ATTR) if den is not None else None
        return owner if owner is not None else cls(models, **kwargs)

    # -- the stack ------------------------------------------------------------------------------
    def check(self, lora: LoraWeights) -> None:
        check_lora(lora, self.networks, self.base)

    def set_stack(self, specs: Iterable[Spec]) -> "LoraPatcher":
        """Make the applied LoRAs exactly ``specs`` (paths, ``"FILE:STRENGTH"``, LoraWeights or
        ``(lora, strength)`` pairs), in order. Every LoRA is checked before any weight changes."""
        pairs = _as_pairs(specs)
        for lora, _ in pairs:
            self.check(lora)
        if [(id(l), s) for l, s in pairs] != [(id(l), s) for l, s in self.stack]:
            self._apply(pairs)
        return self

    def add(self, lora: Spec, strength: Optional[float] = None) -> "LoraPatcher":
        """Stack one more LoRA on top of the current ones."""
        spec = (lora, strength) if strength is not None else lora
        return self.set_stack(self.stack + [spec])

    def remove(self, lora: Union[LoraWeights, str, os.PathLike]) -> "LoraPatcher":
        """Take a LoRA (object or file path) off the stack; the others stay."""
        def same(held: LoraWeights) -> bool:
            if isinstance(lora, LoraWeights):
                return held is lora
            return held.path is not None and os.path.abspath(held.path) == os.path.abspath(os.fspath(lora))

        return self.set_stack([(held, s) for held, s in self.stack if not same(held)])

    def unpatch(self) -> None:
        """Restore every patched weight to the base bit for bit (the patcher stays attached, empty)."""
        self._apply([])

    def __enter__(self) -> "LoraPatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.unpatch()

    # -- weights --------------------------------------------------------------------------------
    @torch.no_grad()
    def _apply(self, pairs: List[Tuple[LoraWeights, float]]) -> None:
        active: Dict[Tuple[str, str], List[Tuple[LoraWeights, float]]] = {}
        for lora, s in pairs:
            if s != 0.0:
                for key in lora.modules:
                    active.setdefault(key, []).append((lora, s))
        for key in list(self._backup):  # modules no LoRA touches any more: back to the base
            if key not in active:
                w = _target(self.networks, *key).weight
                w.data.copy_(self._backup.pop(key))
        for key, users in active.items():
            w = _target(self.networks, *key).weight
            if key not in self._backup:
                self._backup[key] = w.detach().to(self.backup_device, copy=True)
            new = self._backup[key].to(w.device, torch.float32, copy=True)
            for lora, s in users:
                a, b = lora.modules[key]
                new += lora_delta(a.to(w.device), b.to(w.device), s * lora.scale(a.shape[0]), w.shape)
            w.data.copy_(new.to(w.dtype))
        self.stack = list(pairs)

    def describe(self) -> str:
        return ", ".join(f"{l.name}:{s:g}" for l, s in self.stack) or "(no LoRA)"


def apply_loras(models: Any, specs: Iterable[Spec]) -> LoraPatcher:
    """Apply ``specs`` (``"FILE[:STRENGTH]"`` strings, paths, LoraWeights or ``(lora, strength)``
    pairs) to the loaded ``models`` in place and return the patcher (``.unpatch()`` undoes it)."""
    return LoraPatcher.attached(models).set_stack(list(specs))
