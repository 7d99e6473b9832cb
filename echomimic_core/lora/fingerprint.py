"""Identity of a base model: a cheap, dtype-stable fingerprint of the three trained networks.

A LoRA only makes sense on the weights it was trained on, so every LoRA file records the fingerprint
of its base and loading compares it with the networks it is applied to.

Definition (version 1; ``networks`` = ``reference_unet``, ``denoising_unet``, ``pose_encoder``, the VAE
and the audio encoder are frozen everywhere and not part of it):

* **structure** = sha256 over the lines ``"<network>.<key>:<d0>x<d1>x…\\n"`` of every floating-point
  tensor of each network's ``state_dict()`` (networks and keys sorted);
* **samples** = from each of those tensors, in the same order, the values at the flat indices
  ``(2j + 1)·n // (2·m)`` for ``j < m``, ``m = min(4, n)`` (centres of ``m`` equal segments), as float32;
* **hash** = sha256 over the structure hash and the samples rounded to float16 (little-endian bytes).

Rounding to float16 makes the hash identical for fp32 and fp16 copies of the same weights (the
loaders cast with round-to-nearest). Other precisions (bf16) cannot share an exact hash, so the file
also stores the samples and :func:`compare` falls back to a tolerance check sized to the dtype. Cost:
one gather of ~10 k values (about 4 per tensor), no pass over the weights.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

__all__ = ["NETWORKS", "BaseFingerprint", "networks_of", "fingerprint", "fingerprint_state", "compare"]

NETWORKS = ("denoising_unet", "pose_encoder", "reference_unet")  # sorted: the fingerprint order
VERSION = 1
SAMPLES_PER_TENSOR = 4
# relative tolerance of the sample comparison per compute dtype (one rounding each side, with margin)
_RTOL = {torch.float32: 2.0 ** -10, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


@dataclass(frozen=True)
class BaseFingerprint:
    """``structure`` and ``hash``: sha256 hex digests; ``samples``: float32 ``[N]`` on the CPU."""

    structure: str
    hash: str
    samples: torch.Tensor
    dtype: torch.dtype = torch.float32

    @property
    def short(self) -> str:
        return self.hash[:12]


def networks_of(models: Any) -> Dict[str, nn.Module]:
    """``{name: module}`` of the fingerprinted networks of an ``EchoMimicModels``, the trainer's
    ``Models``, or a mapping (names not in :data:`NETWORKS` are ignored; missing ones are skipped)."""
    if isinstance(models, Mapping):
        return {k: models[k] for k in NETWORKS if models.get(k) is not None}
    return {k: getattr(models, k) for k in NETWORKS if getattr(models, k, None) is not None}


def _sample_index(n: int) -> torch.Tensor:
    m = min(SAMPLES_PER_TENSOR, n)
    return torch.tensor([(2 * j + 1) * n // (2 * m) for j in range(m)], dtype=torch.long)


def _hash(structure: str, samples: torch.Tensor) -> str:
    h = hashlib.sha256(f"echomimic-v2-base/{VERSION}:{structure}".encode())
    h.update(samples.to(torch.float16).numpy().astype("<f2").tobytes())
    return h.hexdigest()


@torch.no_grad()
def fingerprint(models: Any) -> BaseFingerprint:
    """The fingerprint of the networks as they are now (call it before applying any LoRA)."""
    return fingerprint_state({name: net.state_dict() for name, net in networks_of(models).items()})


@torch.no_grad()
def fingerprint_state(states: Mapping[str, Mapping[str, torch.Tensor]]) -> BaseFingerprint:
    """The fingerprint from ``{network: state_dict}`` (e.g. with patched weights swapped for their originals)."""
    lines, picks = [], []
    dtype = torch.float32
    for name in sorted(k for k in states if k in NETWORKS):
        state = states[name]
        for key in sorted(state):
            t = state[key]
            if not t.is_floating_point() or t.numel() == 0:
                continue
            dtype = t.dtype if t.dtype in (torch.float16, torch.bfloat16) else dtype
            lines.append(f"{name}.{key}:{'x'.join(str(s) for s in t.shape)}\n")
            flat = t.detach().reshape(-1)
            picks.append(flat[_sample_index(flat.numel()).to(flat.device)].float())
    structure = hashlib.sha256("".join(lines).encode()).hexdigest()
    samples = torch.cat([p.cpu() for p in picks]) if picks else torch.zeros(0)
    return BaseFingerprint(structure, _hash(structure, samples), samples, dtype)


def compare(expected: BaseFingerprint, actual: BaseFingerprint) -> Optional[str]:
    """None when ``actual`` is the base ``expected`` describes, else a short reason.

    Equal hashes match; with equal structure, samples within the tolerance of the coarser of the two
    dtypes match too (e.g. a bf16 copy of the base)."""
    if expected.hash == actual.hash:
        return None
    if expected.structure != actual.structure:
        return "different network structure (tensor names or shapes)"
    if expected.samples.shape != actual.samples.shape:
        return "different number of sampled weights"
    rtol = max(_RTOL.get(expected.dtype, 2.0 ** -7), _RTOL.get(actual.dtype, 2.0 ** -7))
    close = torch.isclose(actual.samples, expected.samples, rtol=rtol, atol=1e-6)
    bad = int((~close).sum())
    if bad == 0:
        return None
    return f"{bad} of {close.numel()} sampled weight values differ"
