"""Load the official per-frame pose ``.npy`` files WITHOUT running arbitrary pickle code.

The official files are ``np.save`` of a 0-d object array holding a dict, i.e. a pickle. Loading them
with ``np.load(..., allow_pickle=True)`` would execute whatever the pickle says. Here the ``.npy``
header is parsed with numpy's format helpers and the payload goes through a restricted unpickler
that can only build:

* ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct`` (array rebuild),
* ``numpy.ndarray``, ``numpy.dtype``,
* ``numpy.core.multiarray.scalar`` / ``numpy._core.multiarray.scalar`` (numpy scalars such as a
  ``np.float64`` inside a list; it only reinterprets bytes),
* plain dict / list / tuple / int / float / str / bytes / bool / None (pickle opcodes, no globals).

Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) is refused with an
:class:`~echomimic_core.errors.InputError` *before* it is called, so nothing in the file runs.
Non-object ``.npy`` arrays are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from ..errors import InputError

MAX_POSE_FILE_BYTES = 64 * 1024 * 1024

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


def _resolve(module: str, name: str):
    if name == "ndarray":
        return np.ndarray
    if name == "dtype":
        return np.dtype
    if int(np.__version__.split(".")[0]) >= 2:  # numpy 2 keeps the implementation in numpy._core
        from numpy._core import multiarray  # type: ignore[attr-defined]
    else:
        from numpy.core import multiarray  # type: ignore[no-redef]
    return getattr(multiarray, name)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in _ALLOWED:
            return _resolve(module, name)
        raise InputError(
            f"refusing to load pose file {self._source}: its pickle asks for '{module}.{name}', which a "
            "pose file never contains (only numpy arrays and plain dicts/lists/numbers are allowed). "
            "The file may be malicious or not a pose file; nothing from it was executed.")

    def persistent_load(self, pid):
        raise InputError(f"refusing to load pose file {self._source}: it uses pickle persistent ids")


def safe_unpickle(data: bytes, source: str = "<bytes>"):
    """Unpickle ``data`` allowing only numpy arrays/dtypes/scalars and plain containers."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except InputError:
        raise
    except Exception as exc:  # truncated/corrupt payloads, bad opcodes, ...
        raise InputError(f"cannot read pose file {source}: corrupt pickle payload ({type(exc).__name__}: {exc})") from None


def safe_load_npy(path: str | Path):
    """Read one ``.npy`` file safely. Object arrays are unpickled with the restricted unpickler;
    a 0-d object array returns its element (usually the frame dict), any other array is returned as is."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read pose file {path}: {exc.strerror or exc}") from None
    if size > MAX_POSE_FILE_BYTES:
        raise InputError(f"pose file {path} is {size} bytes, too large for a pose frame (limit {MAX_POSE_FILE_BYTES})")
    with open(path, "rb") as fh:
        try:
            version = npy_format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
            else:
                shape, fortran, dtype = npy_format._read_array_header(fh, version)  # type: ignore[attr-defined]
        except Exception as exc:
            raise InputError(f"{path} is not a .npy file ({exc})") from None
        if not dtype.hasobject:
            fh.seek(0)
            try:
                return np.load(fh, allow_pickle=False)
            except Exception as exc:
                raise InputError(f"cannot read {path}: {exc}") from None
        obj = safe_unpickle(fh.read(), str(path))
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == ():
        return obj.item()
    return obj
