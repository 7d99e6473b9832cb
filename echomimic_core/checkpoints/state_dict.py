"""The one safe reader / writer of weight files, and the key accounting every loader uses.

Every weight read or write of the project (library, ComfyUI nodes, trainer, ``convert``) goes through
this module, so the safety rules live in one place:

* reading never executes code: ``.safetensors`` through safetensors, every other suffix through
  ``torch.load(weights_only=True)``, memory-mapped when the file is a zip archive (the legacy non-zip
  format cannot be mapped);
* truncated / corrupt files, pickles that would need code execution, and files that are not plain
  ``name → tensor`` dicts each raise one :class:`~echomimic_core.errors.CheckpointError` naming the fix;
* writing is atomic (temporary file in the target folder, then ``os.replace``) and leaves the usual
  ``0644`` permissions (``mkstemp`` alone would leave ``0600``).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..errors import CheckpointError, ModelFilesNotFoundError, NotAStateDictError

__all__ = ["WEIGHT_SUFFIXES", "PICKLE_SUFFIXES", "read_checkpoint", "read_state_dict", "save_state_dict",
           "save_checkpoint", "atomic_write",
           "LazyTensors", "verify_identical", "nonfinite_keys", "LoadReport", "key_mismatch_error",
           "check_strict", "expected_shapes", "cast_floating"]

PathLike = Union[str, os.PathLike]

#: checkpoint suffixes, in order of preference when several exist
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
#: suffixes read with ``torch.load(weights_only=True)``
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
#: file mode of written weights (readable by everyone, like a plain ``open(…, "wb")`` under umask 022)
FILE_MODE = 0o644

_LOAD_ERRORS = (RuntimeError, OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, AttributeError,
                IndexError, TypeError)


def corrupt_error(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: cannot be read as a checkpoint ({detail}). The file is probably truncated or corrupt "
        f"(an interrupted download?). Fix: download it again and compare its size with the source.")


def _refused(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path}: refused to load — the file is a pickle that contains Python objects or code, not only "
        f"tensors, and loading it would execute code (torch.load(weights_only=True) refused it). EchoMimicV2 "
        f"checkpoints are plain tensor dicts. "
        f"Fix: use the original file from the official source; if you trust this file, re-save it as "
        f"a plain state dict or convert it with `python -m echomimic_core.convert` from a trusted environment.")


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ModelFilesNotFoundError(f"checkpoint file {path} not found")
    if path.stat().st_size == 0:
        raise corrupt_error(path, "the file is empty")


def read_checkpoint(path: PathLike) -> Any:
    """The object stored in ``path``, read without executing code (a dict of tensors for safetensors;
    whatever tensors / containers / numbers a ``weights_only`` pickle holds otherwise, e.g. the openai
    whisper ``{"dims", "model_state_dict"}``).

    Raises:
        ModelFilesNotFoundError: the file does not exist.
        CheckpointError: truncated/corrupt file, or a pickle that needs code execution (refused, never run).
    """
    path = Path(path)
    _check_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return OrderedDict(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise corrupt_error(path, f"{type(exc).__name__}: {exc}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        # "Unsupported operand" on bytes that do not even start like a pickle (PROTO 0x80) is garbage;
        # everything else the weights-only unpickler rejects is a pickle asking for more than tensors
        with open(path, "rb") as f:
            looks_like_pickle = f.read(1) == b"\x80" or zipfile.is_zipfile(path)
        if "Weights only load failed" in str(exc) and (looks_like_pickle or "Unsupported operand" not in str(exc)):
            raise _refused(path) from None
        lines = [ln for ln in str(exc).splitlines() if "Unsupported operand" in ln] or [str(exc)[:200]]
        raise corrupt_error(path, f"UnpicklingError: {lines[0].strip()}") from None
    except _LOAD_ERRORS as exc:
        raise corrupt_error(path, f"{type(exc).__name__}: {str(exc)[:200]}") from None


def as_state_dict(obj: Any, path: Path) -> "OrderedDict[str, torch.Tensor]":
    """``obj`` as a plain state dict; one ``{"state_dict"|"module": …}`` wrapper level is removed."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "module"):
            if key in obj and isinstance(obj[key], Mapping) and len(obj) <= 3:
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in obj.items()):
        raise NotAStateDictError(f"{path}: not a plain state dict (name → tensor). Fix: point to the original "
                                 f"EchoMimicV2 file, or re-export it with torch.save(model.state_dict(), path).")
    return OrderedDict(obj)


def read_state_dict(path: PathLike) -> "OrderedDict[str, torch.Tensor]":
    """Read a plain state dict safely (see :func:`read_checkpoint`).

    Raises:
        ModelFilesNotFoundError: the file does not exist.
        NotAStateDictError: a readable file holding something else than ``name → tensor``.
        CheckpointError: truncated/corrupt file, or a pickle that needs code execution.
    """
    return as_state_dict(read_checkpoint(path), Path(path))


def atomic_write(path: Path, write: Callable[[str], Any]) -> Path:
    """``write(tmp)`` into a temporary file next to ``path``, then rename it over ``path`` (readers never
    see a half-written file; an interrupted write leaves the old file). Mode 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _safetensors_ready(state_dict: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """CPU, contiguous, unshared tensors (safetensors refuses shared or strided storage)."""
    seen: set = set()
    clean = OrderedDict()
    for k, v in state_dict.items():
        v = v.detach().cpu()
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        if not v.is_contiguous() or ptr in seen or v.numel() != v.untyped_storage().nbytes() // max(
                v.element_size(), 1):
            v = v.contiguous().clone()
        if ptr is not None:
            seen.add(ptr)
        clean[k] = v
    return clean


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: PathLike,
                    metadata: Optional[Dict[str, str]] = None, *, dtype: Optional[torch.dtype] = None,
                    keep_dtype: Sequence[str] = (), verify: bool = False) -> Path:
    """Write ``state_dict`` atomically as ``.safetensors`` or a plain ``torch.save`` pickle (other suffixes).

    ``dtype`` casts floating tensors except the keys ending with one of ``keep_dtype``; ``verify`` reads
    the file back and raises unless every tensor is bit-identical to what was meant to be written.
    """
    path = Path(path)
    tensors = OrderedDict(
        (k, v.to(dtype) if dtype is not None and v.is_floating_point() and not k.endswith(tuple(keep_dtype)) else v)
        for k, v in state_dict.items())
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file(_safetensors_ready(tensors), tmp,
                                                 metadata=metadata or {"format": "pt"}))
    else:
        atomic_write(path, lambda tmp: torch.save(
            OrderedDict((k, v.detach().cpu().contiguous()) for k, v in tensors.items()), tmp))
    if verify:
        verify_identical(tensors, read_state_dict(path), f"{path}")
    return path


def save_checkpoint(obj: Any, path: PathLike) -> Path:
    """Write a ``weights_only``-loadable object that is not a flat state dict (e.g. the openai whisper
    ``{"dims": …, "model_state_dict": …}``) atomically with :func:`torch.save`; the counterpart of
    :func:`read_checkpoint`."""
    return atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes (bit-exact comparison, NaN-safe)."""
    return t.detach().cpu().reshape(-1).contiguous().view(torch.uint8)


def verify_identical(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], what: str = "") -> None:
    """Raise :class:`CheckpointError` unless both state dicts hold bit-identical tensors."""
    if set(a) != set(b):
        raise CheckpointError(f"{what}: key sets differ after writing (only in source: "
                              f"{sorted(set(a) - set(b))[:5]}, only in copy: {sorted(set(b) - set(a))[:5]})")
    for k in a:
        x, y = a[k], b[k]
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(_bytes(x), _bytes(y)):
            raise CheckpointError(f"{what}: tensor {k} differs after writing")


def nonfinite_keys(state_dict: Mapping[str, torch.Tensor], chunk: int = 1 << 22) -> List[str]:
    """Names of floating tensors holding NaN or ±Inf (scanned in chunks: no full-size temporary)."""
    bad = []
    for k, v in state_dict.items():
        if not v.is_floating_point():
            continue
        flat = v.detach().reshape(-1)
        if any(not bool(torch.isfinite(flat[i:i + chunk]).all()) for i in range(0, flat.numel(), chunk)):
            bad.append(k)
    return bad


class LazyTensors:
    """Keys, shapes and tensors of one or several weight files, read only when asked for.

    ``.safetensors`` files are opened with ``safe_open`` (a tensor is read when :meth:`get` is called);
    other files are read whole with :func:`read_state_dict`. Used for the base unet weights (only keys no
    EchoMimicV2 file provides are read) and for sharded Hugging Face folders.
    """

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self._where: Optional[Dict[str, Any]] = None

    def _index(self) -> Dict[str, Any]:
        if self._where is None:
            self._where = {}
            for path in self.paths:
                if path.suffix == ".safetensors":
                    from safetensors import safe_open

                    _check_file(path)
                    try:
                        handle = safe_open(str(path), framework="pt", device="cpu")
                        keys = list(handle.keys())
                    except Exception as exc:
                        raise corrupt_error(path, f"{type(exc).__name__}: {exc}") from None
                    self._where.update((k, handle) for k in keys)
                else:
                    sd = read_state_dict(path)
                    self._where.update((k, sd) for k in sd)
        return self._where

    def keys(self) -> List[str]:
        return list(self._index())

    def __contains__(self, key: str) -> bool:
        return key in self._index()

    def shape(self, key: str) -> Optional[Tuple[int, ...]]:
        src = self._index().get(key)
        if src is None:
            return None
        return tuple(src[key].shape) if isinstance(src, Mapping) else tuple(src.get_slice(key).get_shape())

    def get(self, key: str) -> torch.Tensor:
        src = self._index()[key]
        return src[key] if isinstance(src, Mapping) else src.get_tensor(key)


# ------------------------------------------------------------------------------------------------
# key accounting


@dataclass
class LoadReport:
    """Where the denoiser's values came from (key counts), for logs and ``check``."""

    sources: Dict[str, int] = field(default_factory=dict)
    recomputed: List[str] = field(default_factory=list)
    check_finite: bool = False  # scan the tensors for NaN / Inf while loading
    nonfinite: Dict[str, List[str]] = field(default_factory=dict)  # network → keys holding NaN / Inf


def _fmt_keys(keys: Sequence[str]) -> str:
    return "\n".join(f"    {k}" for k in keys)


def key_mismatch_error(what: str, path: Path, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                       mismatched: Sequence[Tuple[str, tuple, tuple]] = (), fix: str = "") -> CheckpointError:
    """One error listing every missing / unexpected / mis-shaped key by name."""
    parts = [f"{path}: does not match the {what} architecture."]
    if missing:
        parts.append(f"  {len(missing)} missing key(s) (needed by the model, found in no file):\n{_fmt_keys(missing)}")
    if unexpected:
        parts.append(f"  {len(unexpected)} unexpected key(s) (in the file, not in the model):\n{_fmt_keys(unexpected)}")
    if mismatched:
        lines = [f"    {k}: file {list(fs)} vs model {list(ms)}" for k, fs, ms in mismatched]
        parts.append(f"  {len(mismatched)} shape mismatch(es):\n" + "\n".join(lines))
    parts.append(fix or "Fix: use the matching official EchoMimicV2 file (a file from another model or "
                        "another EchoMimic version does not fit), and check the folder's config.json / "
                        "inference_config.json.")
    return CheckpointError("\n".join(parts))


def check_strict(what: str, path: Path, sd: Mapping[str, torch.Tensor], expected: Mapping[str, tuple],
                 allow_missing: Iterable[str] = ()) -> None:
    """Raise :func:`key_mismatch_error` unless ``sd`` has exactly the ``expected`` keys and shapes
    (keys in ``allow_missing`` may be absent)."""
    allowed = set(allow_missing)
    missing = [k for k in expected if k not in sd and k not in allowed]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [(k, tuple(sd[k].shape), expected[k]) for k in expected
                  if k in sd and tuple(sd[k].shape) != expected[k]]
    if missing or unexpected or mismatched:
        raise key_mismatch_error(what, path, missing, unexpected, mismatched)


def expected_shapes(model: torch.nn.Module) -> "OrderedDict[str, tuple]":
    """``{key: shape}`` of a (possibly meta-device) model's state dict."""
    return OrderedDict((k, tuple(v.shape)) for k, v in model.state_dict().items())


def cast_floating(sd: Mapping[str, torch.Tensor], dtype: torch.dtype) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items())
