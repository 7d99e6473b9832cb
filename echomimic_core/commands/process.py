"""What the command line may do to its own Python process, and the library never does.

A ``python -m echomimic_core`` run owns its interpreter, so it can tune it; the library does not, because a
ComfyUI server (or any other host) owns the process it runs in.

The policy: after importing the generation stack, move every object alive so far into the garbage collector's
permanent generation (:func:`gc.freeze`), and freeze again before the interpreter shuts down. torch, diffusers
and transformers leave millions of GC-tracked objects behind at import; each full collection traverses them all
(~0.2 s per pass on the project's CPU machines), and a run triggers several, and interpreter shutdown runs more:
measured on the embedded demo, 1.4 s of full collections during the run and ~2 s at exit, out of ~23 CPU s.
Frozen objects are still freed by reference counting; only their cyclic garbage is left to the process exit.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_after_imports", "freeze_before_exit"]


def freeze_after_imports() -> None:
    """Import what every generation imports anyway (call it after the cheap input checks, so a bad
    argument still fails in a second), then freeze the objects alive now."""
    from .. import checkpoints, pipeline  # noqa: F401  (the heavy stack: torch, diffusers, transformers)
    from ..audio import encoder  # noqa: F401

    gc.freeze()


def freeze_before_exit() -> None:
    """Skip the full collections of interpreter shutdown: nothing the command wrote depends on them (outputs
    are closed and renamed before the command returns; atexit handlers still run)."""
    gc.freeze()
