"""The node edge: library errors become errors ComfyUI knows how to show.

ComfyUI 0.3.64 (execution.py) treats an exception out of a node in three ways: its
``InterruptProcessingException`` is reported as "execution_interrupted" (no error panel); an instance
of ``OOM_EXCEPTION`` (``torch.cuda.OutOfMemoryError``) makes it unload every model and add its memory
tip; anything else fills the error panel with ``str(exc)``, the exception's type and its traceback.
So every node's ``execute`` is wrapped in :func:`node_edge`, which

* turns the library's ``Interrupted`` into ComfyUI's interrupt,
* turns a CUDA/CPU out-of-memory into ComfyUI's OOM type with a one-line hint of what to shrink,
* turns every other ``EchoMimicError`` into one :class:`EchoMimicNodeError` whose message is one line:
  the node's name, then the library's message (which names the fix).

The new exception is raised after the ``except`` block, so it carries neither the library's deep
traceback nor a reference to its frames (an OOM's frames hold the tensors ComfyUI is about to free).
Bugs (any other exception) pass through untouched, traceback and all.
"""

from __future__ import annotations

import functools
import inspect
import logging

from echomimic_core.errors import EchoMimicError, Interrupted

from . import _comfy

OOM_HINT = ("Fix: lower width/height, or connect EchoMimicV2 Context Options with a smaller window_batch "
            "(e.g. 1) and decode_batch 1.")
# how torch's CPU allocator (and MPS) word running out, where they raise a plain RuntimeError
_OOM_WORDS = ("out of memory", "can't allocate memory", "not enough memory")


class EchoMimicNodeError(EchoMimicError):
    """A library error as a node shows it: one line, the node's name first. ``cause`` is the name of
    the library's error class (the original is dropped with its traceback)."""

    def __init__(self, message: str, node: str = "", cause: str = ""):
        super().__init__(message)
        self.node = node
        self.cause = cause


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError  # torch < 2.5: cuda only
    if isinstance(exc, (oom, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(w in str(exc) for w in _OOM_WORDS)


def node_message(node: str, exc: BaseException) -> str:
    """``"<node>: <library message>"`` on one line, the node named once."""
    text = one_line(exc) or type(exc).__name__
    if text.startswith(f"{node}:"):
        text = text[len(node) + 1:].lstrip()
    return f"{node}: {text}"


def display_name(cls) -> str:
    try:
        return cls.define_schema().display_name
    except Exception:  # the name only decorates a message; never hide the real error behind this
        return getattr(cls, "__name__", "EchoMimicV2 node")


def convert(cls, exc: BaseException) -> BaseException | None:
    """The exception ComfyUI should see instead of ``exc``, or None to let ``exc`` through as it is."""
    if isinstance(exc, EchoMimicNodeError):
        return None
    if isinstance(exc, Interrupted):
        return _comfy.interrupt_exception_type()(one_line(exc))
    if is_out_of_memory(exc):
        node = display_name(cls)
        # torch's own text runs to a paragraph; its first two sentences say what and how much
        what = ". ".join(one_line(exc).split(". ")[:2]).rstrip(".")
        return _comfy.oom_exception_type()(f"{node}: out of memory ({what}). {OOM_HINT}")
    if isinstance(exc, EchoMimicError):
        node = display_name(cls)
        return EchoMimicNodeError(node_message(node, exc), node=node, cause=type(exc).__name__)
    return None


def node_edge(execute):
    """Decorator for a V3 node's ``execute`` (under ``@classmethod``): errors converted as above."""
    if inspect.iscoroutinefunction(execute):
        raise TypeError("node_edge wraps synchronous execute methods only")

    @functools.wraps(execute)
    def wrapper(cls, *args, **kwargs):
        replacement = None
        try:
            return execute(cls, *args, **kwargs)
        except Exception as exc:
            replacement = convert(cls, exc)
            if replacement is None:
                raise
            logging.debug("EchoMimicV2: %s converted at the node edge", type(exc).__name__, exc_info=exc)
        # outside the except block: the original exception, its traceback and its frames are dropped
        raise replacement

    wrapper.node_edge = True
    return wrapper
