"""Termination signals as exceptions, so that an interrupted run cleans up like Ctrl-C does.

By default SIGTERM (``kill``, ``timeout``, docker, schedulers) and SIGHUP (a closed terminal) end the
process at once: no ``finally`` runs and a half-written temporary video stays behind. Inside
:func:`termination_as_exception` they raise :class:`Terminated` instead, at the point the main thread
is executing, so every ``with``/``finally`` on the way out (the video writer's cleanup among them) runs.

:class:`Terminated` derives from ``BaseException`` like ``KeyboardInterrupt``: an ``except Exception``
somewhere in a library must not swallow a request to stop.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

#: the signals turned into :class:`Terminated` (SIGINT stays KeyboardInterrupt, Python's own handling)
TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(BaseException):
    """The process was asked to stop by a signal; ``exit_code`` is the shell convention 128 + signal."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(f"terminated by {signal.Signals(self.signum).name}")


class _Handler:
    """Raises :class:`Terminated` on the first signal only: a second SIGTERM while the cleanup runs
    must not interrupt that cleanup."""

    def __init__(self) -> None:
        self.fired = False

    def __call__(self, signum, frame) -> None:
        if not self.fired:
            self.fired = True
            raise Terminated(signum)


@contextlib.contextmanager
def termination_as_exception() -> Iterator[None]:
    """Within the block, SIGTERM/SIGHUP raise :class:`Terminated` in the main thread; the previous
    handlers come back afterwards. Outside the main thread (where Python cannot install handlers) it is a
    no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _Handler()
    previous = {signum: signal.signal(signum, handler) for signum in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
