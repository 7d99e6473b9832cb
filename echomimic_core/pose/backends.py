"""The pose-extraction backends, in one registry used by the ComfyUI nodes, the CLI and the trainer's
preprocessing.

Every backend is a :class:`PoseBackend`: a name, what it detects (``capabilities``: ``"body"``,
``"hands"``, ``"face"``), the model files it needs (searched for by :meth:`PoseBackend.find_files`, once,
in the places the caller names) and a factory that returns an extractor
``extractor(rgb_uint8 [H, W, 3]) -> frame dict`` (the official layout of :mod:`.formats`)::

    backend = get_backend("dwpose")
    extractor = backend.create(model_dir="models/echomimic_v2/dwpose")   # or models_roots=[...]

A backend that cannot run here raises :class:`~echomimic_core.errors.ModelFilesNotFoundError` (files
absent, the message names them and where to put them) or
:class:`~echomimic_core.errors.BackendUnavailableError` (package absent). :func:`register_backend` adds
another one (e.g. a third-party extractor) under a new name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, ModelFilesNotFoundError

__all__ = ["PoseBackend", "Extractor", "register_backend", "get_backend", "backend_names", "create_extractor",
           "CAPABILITIES"]

Extractor = Callable[[np.ndarray], dict]
PathLike = Union[str, Path]
CAPABILITIES = ("body", "hands", "face")


@dataclass(frozen=True)
class PoseBackend:
    """One pose extractor family.

    Attributes:
        name: registry key (``"dwpose"``, ``"mediapipe"``).
        description: one line for UIs and ``--help``.
        capabilities: subset of :data:`CAPABILITIES` that its frames fill.
        model_files: file names it needs next to each other in one folder (empty: shipped in its package).
        package: the pip requirement that provides it.
        factory: ``factory(files: tuple[Path, ...]) -> extractor``; ``files`` are the found
            ``model_files``, in order.
        search_subdirs: sub-folders of a models root searched for ``model_files`` ("" = the root).
        download_hint: where the model files come from (shown when they are missing).
    """

    name: str
    description: str
    capabilities: frozenset
    model_files: Tuple[str, ...]
    package: str
    factory: Callable[[Tuple[Path, ...]], Extractor]
    search_subdirs: Tuple[str, ...] = ("",)
    download_hint: str = ""

    def candidate_dirs(self, model_dir: Optional[PathLike] = None, models_roots: Iterable[PathLike] = ()) -> List[Path]:
        """``model_dir`` first, then every root joined with each of ``search_subdirs`` (no duplicates)."""
        dirs: List[Path] = [Path(model_dir)] if model_dir is not None else []
        for root in models_roots:
            for sub in self.search_subdirs:
                d = Path(root) / sub if sub else Path(root)
                if d not in dirs:
                    dirs.append(d)
        return dirs

    def find_files(self, model_dir: Optional[PathLike] = None, models_roots: Iterable[PathLike] = ()
                   ) -> Tuple[Path, ...]:
        """The ``model_files`` from the first candidate folder that holds all of them.

        Raises :class:`ModelFilesNotFoundError` naming the files, the folders looked in and the fix."""
        if not self.model_files:
            return ()
        roots = [Path(r) for r in models_roots]
        dirs = self.candidate_dirs(model_dir, roots)
        for d in dirs:
            paths = tuple(d / name for name in self.model_files)
            if all(p.is_file() for p in paths):
                return paths
        looked = "\n".join(f"  {d}" + ("" if not d.is_dir() else "  (has: " + ", ".join(
            sorted(p.name for p in d.iterdir() if p.suffix == Path(self.model_files[0]).suffix)[:6]) + ")")
            for d in dirs) or "  (no folder given)"
        where = (roots[0] / self.search_subdirs[0] if roots else
                 (Path(model_dir) if model_dir is not None else f"<ComfyUI>/models/{self.search_subdirs[0]}"))
        raise ModelFilesNotFoundError(
            f"{self.name} model files not found: need " + " and ".join(f"'{n}'" for n in self.model_files)
            + f" in one folder.\nLooked in:\n{looked}\n{self.download_hint} Put them in {where}/ (nothing is "
            f"downloaded automatically), or use another pose backend ({', '.join(backend_names())}).")

    def create(self, model_dir: Optional[PathLike] = None, models_roots: Iterable[PathLike] = ()) -> Extractor:
        """Find the model files (once) and build the extractor."""
        return self.factory(self.find_files(model_dir, models_roots))


_REGISTRY: Dict[str, PoseBackend] = {}


def register_backend(backend: PoseBackend) -> PoseBackend:
    unknown = set(backend.capabilities) - set(CAPABILITIES)
    if unknown:
        raise ConfigError(f"pose backend {backend.name!r}: unknown capabilities {sorted(unknown)}")
    _REGISTRY[backend.name] = backend
    return backend


def backend_names() -> List[str]:
    """Registered names, the default (``mediapipe``: no model files needed) first."""
    return sorted(_REGISTRY, key=lambda n: (n != "mediapipe", n))


def get_backend(name: str) -> PoseBackend:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"pose backend must be one of {backend_names()}, not {name!r}") from None


def create_extractor(name: str, model_dir: Optional[PathLike] = None,
                     models_roots: Sequence[PathLike] = ()) -> Extractor:
    """``get_backend(name).create(model_dir, models_roots)``."""
    return get_backend(name).create(model_dir, models_roots)


def _dwpose(files: Tuple[Path, ...]) -> Extractor:
    from .dwpose import DWPoseExtractor

    det, pose = files
    return DWPoseExtractor(model_dir=det.parent, det_name=det.name, pose_name=pose.name)


def _mediapipe(files: Tuple[Path, ...]) -> Extractor:
    from .mediapipe_backend import MediaPipeExtractor

    return MediaPipeExtractor()


def _register_builtins() -> None:
    from .dwpose import DET_FILE, MODELS_SUBDIRS, POSE_FILE

    register_backend(PoseBackend(
        name="dwpose", description="the official extractor (YOLOX + DWPose on onnxruntime); local .onnx files",
        capabilities=frozenset({"body", "hands", "face"}), model_files=(DET_FILE, POSE_FILE),
        package="onnxruntime", factory=_dwpose, search_subdirs=MODELS_SUBDIRS,
        download_hint="Download yolox_l.onnx (person detector) and dw-ll_ucoco_384.onnx (whole-body pose) from "
                      "https://huggingface.co/yzd-v/DWPose."))
    register_backend(PoseBackend(
        name="mediapipe", description="mediapipe 0.10.21 Holistic; models ship in the wheel, CPU",
        capabilities=frozenset({"body", "hands", "face"}), model_files=(), package="mediapipe==0.10.21",
        factory=_mediapipe))


_register_builtins()
