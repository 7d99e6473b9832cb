"""``check``: report the environment and which EchoMimicV2 model folders are found and load."""

from __future__ import annotations

import argparse
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
    parser.add_argument("--no-finite-scan", action="store_true",
                        help="skip the NaN / Inf scan of the loaded weights (one extra pass over them)")


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
    for folder in dirs:
        print(f"model folder: {folder}")
        status |= report_folder(folder, load=not args.no_load, check_finite=not args.no_finite_scan)
    return status


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def report_folder(folder: Path, load: bool, check_finite: bool = True) -> int:
    """Print, per variant, which files are found or missing under ``folder`` and (``load``) whether the
    networks load (and, ``check_finite``, hold only finite values). Returns 0 when the normal variant is
    complete (and loads cleanly), else 1. The ``acc`` variant is optional."""
    import torch

    from ..checkpoints import VARIANTS, ModelFiles, expected_layout, find_model_files, load_models
    from ..errors import EchoMimicError

    status = 0
    folder = Path(folder)
    for variant in VARIANTS:
        try:
            files = find_model_files(folder, variant)
        except EchoMimicError as exc:
            print(f"  [{variant}] {exc}")
            return 1
        names = files.describe()
        print(f"  variant {variant}: weights in {files.weights_dir}")
        for key in ModelFiles.REQUIRED + ("inference_config",):
            value = getattr(files, key)
            mark = "found  " if value is not None else ("missing" if key != "inference_config" else "absent ")
            print(f"    {mark} {names[key]:<52} {value if value is not None else ''}")
        missing = files.missing()
        if missing:
            if variant == "normal":
                status = 1
                print(f"    -> incomplete: {', '.join(missing)}")
                print("       " + expected_layout(variant).replace("\n", "\n       "))
            else:
                print(f"    -> not installed (optional): {', '.join(missing)}")
            continue
        if not load:
            print("    -> all files found (not loaded: --no-load)")
            continue
        try:
            # the scan sees the stored values (before the cast to float16)
            models = load_models(folder, variant=variant, dtype=torch.float16, device="cpu",
                                 check_finite=check_finite)
        except EchoMimicError as exc:
            status = 1
            print(f"    -> LOAD FAILED: {exc}")
            continue
        report = models.load_report
        if report is not None and report.nonfinite:
            status = 1
            for net, keys in report.nonfinite.items():
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                print(f"    -> NON-FINITE WEIGHTS in {net}: {len(keys)} tensor(s) hold NaN/Inf: {shown}")
            print("       Fix: the file is damaged or came from a diverged training run; download / export it again.")
            del models
            continue
        counts = {k: _count(v) for k, v in models.networks().items()}
        scanned = ", all values finite" if check_finite else ""
        print(f"    -> loads OK (float16, cpu{scanned}): "
              + ", ".join(f"{k} {v:,} params" for k, v in counts.items()))
        print(f"       denoiser keys by source: {report.sources if report else {}}")
        del models
        _offer_safetensors(files)
    return status


def _offer_safetensors(files) -> None:
    """Pickled weight files load more slowly, cannot be paged by ComfyUI's dynamic VRAM and need the
    weights_only unpickler: point at the verified one-command conversion."""
    pickled = [p for p in (getattr(files, k) for k in files.REQUIRED) if p is not None and Path(p).suffix in (".pth", ".pt", ".bin", ".ckpt")]
    if pickled:
        print(f"       {len(pickled)} weight file(s) are pickles (.pth/.bin); safetensors load faster and page in "
              f"ComfyUI: python -m echomimic_core.convert {files.weights_dir} {Path(files.weights_dir).name}_safetensors")
