"""``check``: report the environment and which EchoMimicV2 model folders are found and load."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
from pathlib import Path

HELP = "report the environment and the model folders found (and whether they load)"

_PACKAGES = ("torch", "diffusers", "transformers", "safetensors", "einops", "numpy", "av",
             "onnxruntime", "opencv-contrib-python", "opencv-python-headless", "mediapipe", "accelerate",
             "xformers")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", action="append", default=[], metavar="DIR",
                        help="a model folder to check (official pretrained_weights layout); repeatable")
    parser.add_argument("--no-load", action="store_true", help="only look for files, do not load the networks")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def candidate_model_dirs(explicit: list[str]) -> list[Path]:
    """Folders named on the command line, in $ECHOMIMIC_MODELS_DIR, and the usual default places."""
    found = [Path(p) for p in explicit]
    if os.environ.get("ECHOMIMIC_MODELS_DIR"):
        found.append(Path(os.environ["ECHOMIMIC_MODELS_DIR"]))
    found += [Path("pretrained_weights"), Path("models/echomimic_v2"), Path("../../models/echomimic_v2"),
              Path("../../models/echo_mimic")]
    unique: list[Path] = []
    for path in found:
        if path.is_dir() and path.resolve() not in [u.resolve() for u in unique]:
            unique.append(path)
    return unique


def run(args: argparse.Namespace) -> int:
    import torch

    print(f"python      {platform.python_version()} ({platform.machine()})")
    for name in _PACKAGES:
        print(f"{name:<24}{_version(name)}")
    print(f"torch devices: cpu" + (f", cuda x{torch.cuda.device_count()}" if torch.cuda.is_available() else ""))

    dirs = candidate_model_dirs(args.models)
    if not dirs:
        print("model folders: none found (pass --models DIR or set ECHOMIMIC_MODELS_DIR)")
        return 0 if not args.models else 1
    status = 0
    checkpoints = importlib.import_module("echomimic_core.checkpoints")
    for folder in dirs:
        print(f"model folder: {folder}")
        status |= checkpoints.report_folder(folder, load=not args.no_load)
    return status
