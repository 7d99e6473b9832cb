"""Whether bfloat16 is worth it on this CPU, and the one warning when it is not.

bfloat16 on the CPU is fast only where oneDNN has native kernels for it: x86 CPUs with AVX-512 (its BF16
extension, or AMX). On an AVX2-only x86 CPU every bf16 convolution and matrix product is emulated: on the
project's AVX2 machine the side-by-side bench (``bench/vs_official.py``, docs/speed.md) took 255 CPU s in
bf16 against 56 s in float32 for the same run (pose encoding 30x, VAE decode 7x, denoising 4x slower), while
on an AVX-512 machine bf16 was 5% faster than float32.
"""

from __future__ import annotations

import platform
from typing import Optional

import torch

__all__ = ["slow_cpu_dtype_warning"]

_X86 = {"x86_64", "amd64", "i386", "i686", "x86"}


def _emulated_bfloat16() -> bool:
    """True on an x86 CPU whose best torch kernels are below AVX-512 (other architectures: not measured)."""
    if platform.machine().lower() not in _X86:
        return False
    return not torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")


def slow_cpu_dtype_warning(device: torch.device | str, dtype: torch.dtype) -> Optional[str]:
    """One line saying why ``dtype`` on ``device`` will be slow and what to use instead; None when it is fine."""
    if torch.device(device).type != "cpu" or dtype != torch.bfloat16 or not _emulated_bfloat16():
        return None
    return (f"bfloat16 on this CPU is emulated (no AVX-512; torch capability "
            f"{torch.backends.cpu.get_cpu_capability()}) and about 4x slower than float32; "
            f"use float32 (--dtype float32, or dtype fp32 in the loader node)")
