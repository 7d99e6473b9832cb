"""Giving freed heap memory back to the operating system between large CPU work units.

glibc keeps freed pages of its heap; with many large, differently sized tensors (one context-window batch or
decode chunk after another) fragmentation lets the resident size creep up with the number of windows.
:func:`trim_heap` (glibc ``malloc_trim``) after each unit keeps the peak flat (measured by
``bench/memory.py``). A no-op without glibc.
"""

from __future__ import annotations

import functools

__all__ = ["trim_heap"]


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
