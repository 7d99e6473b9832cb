"""Per-phase wall time of a generation (``--profile`` / ``--profile-json`` on ``generate`` and ``demo``).

Phases nest (``poses`` inside ``denoise``, ``write`` inside ``decode``); time is charged to the innermost
phase only, so the phase times add up to the wall time between :meth:`Profiler.start` and
:meth:`Profiler.stop`. On CUDA the device is synchronised at every phase boundary while profiling (asynchronous
kernels would otherwise be charged to whichever phase waits on them); without a profiler nothing syncs.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

#: the order phases are printed in (others follow in first-seen order)
PHASES = ("load", "reference", "audio", "poses", "denoise", "decode", "write")


class Profiler:
    def __init__(self, device=None) -> None:
        self.seconds: dict[str, float] = {}
        self.frames = 0
        self._stack: list[str] = []
        self._mark = 0.0
        self._t0: Optional[float] = None
        self._t1: Optional[float] = None
        self._cuda = device is not None and getattr(device, "type", str(device)) == "cuda"

    def _sync(self) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize()

    def _charge(self) -> None:
        now = time.perf_counter()
        name = self._stack[-1] if self._stack else "other"
        self.seconds[name] = self.seconds.get(name, 0.0) + (now - self._mark)
        self._mark = now

    def start(self) -> "Profiler":
        self._t0 = self._mark = time.perf_counter()
        return self

    def stop(self) -> None:
        self._sync()
        self._charge()
        self._t1 = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self._t0 is None:
            self.start()
        self._sync()
        self._charge()
        self._stack.append(name)
        try:
            yield
        finally:
            self._sync()
            self._charge()
            self._stack.pop()

    @property
    def total(self) -> float:
        end = self._t1 if self._t1 is not None else time.perf_counter()
        return end - (self._t0 or end)

    @staticmethod
    def peak_rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux

    def as_dict(self) -> dict:
        order = [p for p in PHASES if p in self.seconds] + [p for p in self.seconds if p not in PHASES]
        out = {"phases": {p: round(self.seconds[p], 4) for p in order}, "total": round(self.total, 4),
               "peak_rss_mb": round(self.peak_rss_mb(), 1), "frames": int(self.frames)}
        if self._cuda:
            import torch

            out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out

    def table(self) -> str:
        d = self.as_dict()
        total = d["total"] or 1e-9
        lines = [f"{'phase':<10} {'seconds':>9} {'share':>7}"]
        for name, sec in d["phases"].items():
            lines.append(f"{name:<10} {sec:>9.2f} {100 * sec / total:>6.1f}%")
        lines.append(f"{'total':<10} {d['total']:>9.2f}")
        lines.append(f"peak RSS {d['peak_rss_mb']:.0f} MiB, {d['frames']} frames"
                     + (f", peak CUDA {d['peak_cuda_mb']:.0f} MiB" if "peak_cuda_mb" in d else ""))
        return "\n".join(lines)

    def report(self, json_path: Optional[str] = None, table: bool = True) -> None:
        if table:
            print(self.table(), file=sys.stderr)
        if json_path:
            Path(json_path).write_text(json.dumps(self.as_dict(), indent=1) + "\n")


@contextlib.contextmanager
def maybe_phase(profiler: Optional[Profiler], name: str) -> Iterator[None]:
    """``profiler.phase(name)``, or nothing without a profiler."""
    if profiler is None:
        yield
    else:
        with profiler.phase(name):
            yield
