"""How many CPU threads torch gets for a piece of work (``--threads`` on ``generate``, ``demo``, the trainer).

torch's default (one intra-op thread per core) is a poor choice for small work on a shared machine: the
networks of the embedded demo model do ~1 ms of arithmetic per operator, so OpenMP workers spend their time
spinning and waking up, and against other busy processes they oversubscribe the cores. Measured on the
2-core project machine under load: the demo took 584 s with torch's 2 threads and 70 s with 1. Large work
(big latents) does benefit from threads, as long as they do not exceed the cores that are actually free.

Rule: an explicit count wins (``--threads N``, or ``ECHOMIMIC_THREADS``); otherwise work below
:data:`SMALL_WORK_TOKENS` latent tokens per network call gets 1 thread, larger work gets the CPUs this
process may use minus the ones other processes keep busy (1-minute load average), at least 1.
"""

from __future__ import annotations

import os
from typing import Optional

#: latent tokens (batch x frames x h x w) per denoiser call below which one thread is fastest
SMALL_WORK_TOKENS = 16384


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(work_tokens: Optional[int]) -> int:
    """The thread count for work of ``work_tokens`` latent tokens per call (None = unknown: all free CPUs)."""
    if work_tokens is not None and work_tokens < SMALL_WORK_TOKENS:
        return 1
    cpus = available_cpus()
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except (AttributeError, OSError):
        busy = 0
    return max(1, min(cpus, cpus - busy + 1))


def choose_threads(requested: Optional[int], work_tokens: Optional[int]) -> int:
    """``requested`` if given (>= 1), else ``ECHOMIMIC_THREADS`` if set, else :func:`default_threads`."""
    if requested is not None:
        if int(requested) < 1:
            from .errors import InputError

            raise InputError(f"--threads must be >= 1 (got {requested})")
        return int(requested)
    env = os.environ.get("ECHOMIMIC_THREADS")
    if env and env.strip().isdigit() and int(env) >= 1:
        return int(env)
    return default_threads(work_tokens)


def apply_threads(requested: Optional[int], work_tokens: Optional[int]) -> int:
    """Set torch's intra-op thread count by :func:`choose_threads` and return it."""
    import torch

    n = choose_threads(requested, work_tokens)
    torch.set_num_threads(n)
    return n


def latent_tokens(width: int, height: int, frames: int, batch: int = 1, factor: int = 8) -> int:
    return int(batch) * int(frames) * (int(height) // factor) * (int(width) // factor)
