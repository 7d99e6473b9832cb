"""Giving freed heap memory back to the operating system between large CPU work units.

glibc keeps freed pages of its heap; with many large, differently sized tensors (one context-window batch or
decode chunk after another) fragmentation lets the resident size creep up with the number of windows.
:func:`trim_heap` (glibc ``malloc_trim``) after each unit keeps the peak flat (measured by
``bench/memory.py``). A no-op without glibc.

Trimming is not free: the next unit touches the returned pages again (page faults, system time). Measured on
the medium bench VAE at 256x256, one thread: decoding one frame per call took 0.091 s/frame, 0.116 s/frame
with a trim after every call. So :class:`HeapTrimmer` trims after every ``every``-th unit only.
"""

from __future__ import annotations

import functools

__all__ = ["HeapTrimmer", "trim_heap"]


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        import ctypes

        return getattr(ctypes.CDLL("libc.so.6"), "malloc_trim", None)
    except OSError:
        return None


def trim_heap() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class HeapTrimmer:
    """Calls :func:`trim_heap` after every ``every``-th :meth:`tick` (``enabled`` False: never)."""

    def __init__(self, every: int, enabled: bool = True) -> None:
        self.every, self.enabled, self._ticks = max(1, int(every)), bool(enabled), 0

    def tick(self, units: int = 1) -> None:
        if not self.enabled:
            return
        before = self._ticks // self.every
        self._ticks += units
        if self._ticks // self.every > before:
            trim_heap()
