"""Helpers (no tests) for running the pack's node functions without a server.

The vendored ComfyUI (shared/vendor/ComfyUI) goes at the END of sys.path so that its `folder_paths`,
`comfy.model_management`, `comfy.utils` and `comfy_api` are the real ones; nothing is written into it
(no byte-code, its folders are redirected to a temporary dir). The pack itself is imported from its
root ``__init__.py`` under a package name of its own, the way ComfyUI imports custom nodes, so the
relative ``from .nodes import ...`` is exercised too.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

from support.paths import REPO, SHARED

COMFYUI_DIR = Path(os.environ.get("COMFYUI_DIR", SHARED / "vendor" / "ComfyUI"))
PACK_MODULE = "echomimic_v2_pack_under_test"
WEIGHTS = SHARED / "fixtures" / "weights"
MEDIA = SHARED / "media"

_state: dict = {}


def comfy_importable() -> bool:
    return (COMFYUI_DIR / "folder_paths.py").is_file()


STUBS = SHARED / "tools" / "comfyui_stubs"


def use_import_stubs() -> None:
    """comfy.model_patcher imports torchvision/torchaudio through comfy.model_base; where the real
    packages cannot be imported (CPU test venv), the shared import-only stubs stand in, as they do for
    the headless server. transformers decides "torchvision is available" from find_spec alone, so with
    the stub on the path it is told the truth (the same hook the headless server gets)."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None and importlib.util.find_spec("torchaudio") is not None:
        return
    if str(STUBS) not in sys.path:
        sys.path.append(str(STUBS))
    # the stub's module __getattr__ raises ImportError, so `from torchvision import transforms` only finds
    # the stub sub-packages once they are imported (ComfyUI's start-up does that, a bare test does not)
    import importlib

    for sub in ("torchvision.transforms", "torchvision.models"):
        importlib.import_module(sub)
    import transformers.utils as tu
    import transformers.utils.import_utils as iu

    def unavailable(*args, **kwargs):
        return False

    for module in (tu, iu):
        for name in ("is_torchvision_available", "is_torchvision_v2_available"):
            if hasattr(module, name):
                setattr(module, name, unavailable)
    mapping = getattr(iu, "BACKENDS_MAPPING", None)
    if mapping is not None and "torchvision" in mapping:
        mapping["torchvision"] = (unavailable, mapping["torchvision"][1])


def import_comfy():
    """Import the vendored ComfyUI modules the pack uses (CPU mode); returns folder_paths."""
    if not comfy_importable():
        pytest.fail(f"vendored ComfyUI not found at {COMFYUI_DIR}: set ECHOMIMIC_SHARED_DIR or COMFYUI_DIR")
    sys.dont_write_bytecode = True  # the vendored tree is read-only material
    if str(COMFYUI_DIR) not in sys.path:
        sys.path.append(str(COMFYUI_DIR))
    use_import_stubs()
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = True
    import folder_paths

    return folder_paths


def load_pack():
    """Import the pack like ComfyUI does (package from its root __init__.py); cached."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    import_comfy()
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACK_MODULE]
        raise
    return module


def load_nodes():
    """The pack's ``nodes`` package (NODES, NODE_MODULES and the legacy id -> class dicts)."""
    load_pack()
    return importlib.import_module(f"{PACK_MODULE}.nodes")


def node_module(name: str):
    """The pack's ``nodes.<name>`` module."""
    load_pack()
    return importlib.import_module(f"{PACK_MODULE}.nodes.{name}")


def make_models_dir(root: Path, acc: bool = True) -> Path:
    """<root>/echomimic_v2 = the tiny fixture weights in the official layout (+ *_acc copies)."""
    folder = root / "echomimic_v2"
    if not folder.exists():
        shutil.copytree(WEIGHTS, folder)
        for path in folder.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if acc:
            for name in ("denoising_unet", "motion_module"):
                shutil.copy(folder / f"{name}.pth", folder / f"{name}_acc.pth")
    return folder


def make_broken_models_dir(root: Path) -> Path:
    """<root>/echomimic_v2/broken: the tiny weights without denoising_unet.pth."""
    folder = root / "echomimic_v2" / "broken"
    if not folder.exists():
        shutil.copytree(WEIGHTS, folder, ignore=shutil.ignore_patterns("denoising_unet.pth"))
        for path in folder.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


@pytest.fixture(scope="session")
def comfy_dirs(tmp_path_factory):
    """folder_paths redirected to a temporary base (models with the tiny weights, input, output)."""
    folder_paths = import_comfy()
    base = tmp_path_factory.mktemp("comfy_base")
    models = base / "models"
    models.mkdir()
    make_models_dir(models)
    make_broken_models_dir(models)
    for sub in ("input", "output", "temp"):
        (base / sub).mkdir()
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_temp_directory(str(base / "temp"))
    load_pack()
    folder_paths.add_model_folder_path("echomimic_v2", str(models / "echomimic_v2"), is_default=True)
    poses = base / "input" / "echomimic_poses" / "01"
    shutil.copytree(MEDIA / "pose" / "01", poses)
    return {"base": base, "models": models, "input": base / "input", "output": base / "output",
            "folder_paths": folder_paths}


def audio_dict(name: str = "speech_en_3s_16k_mono.wav", seconds: float | None = None) -> dict:
    """A ComfyUI AUDIO dict decoded with PyAV like the core LoadAudio (native rate/channels)."""
    import av
    import numpy as np
    import torch

    with av.open(str(MEDIA / "audio" / name)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]
        rate = stream.rate
    data = np.concatenate(chunks, axis=1)
    if data.dtype == np.int16:
        data = data.astype(np.float32) / 32768.0
    waveform = torch.from_numpy(data.astype(np.float32))
    if seconds is not None:
        waveform = waveform[:, : int(seconds * rate)]
    return {"waveform": waveform[None], "sample_rate": int(rate)}


def image_tensor(name: str = "echomimicv2_demo_0014.png", size: int | None = None):
    """A ComfyUI IMAGE [1, H, W, 3] from a shared reference image."""
    import numpy as np
    import torch
    from PIL import Image

    img = Image.open(MEDIA / "ref_images" / name).convert("RGB")
    if size:
        img = img.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img).astype(np.float32) / 255.0)[None]


def nodes():
    """The pack's node id -> V3 class table."""
    return node_package().NODE_CLASS_MAPPINGS


def node_package():
    return load_nodes()


def run(node_id: str, *args, **kwargs):
    """Execute a V3 node's ``execute`` as ComfyUI would (outside a prompt); returns its output tuple."""
    out = nodes()[node_id].execute(*args, **kwargs)
    return out.args


#: small, fast sampler settings for node tests
SAMPLER_ARGS = dict(seed=7, steps=2, cfg=2.5, context_frames=12, context_overlap=3, width=64, height=64, length=16)
