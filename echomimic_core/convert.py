"""Convert EchoMimicV2 checkpoints between ``.pth`` (torch pickle) and ``.safetensors``, verifying that
every tensor is identical (same names, dtypes, shapes and bytes) after writing.

Usage::

    python -m echomimic_core.convert SRC DST [--to safetensors|pth] [--overwrite]

``SRC`` is a model folder (e.g. ``pretrained_weights``) or one file. For a folder, every plain state-dict
file (``.pth/.pt/.bin/.ckpt`` → ``.safetensors``, or the reverse with ``--to pth``) is converted into the
same relative place under ``DST``; other files (configs, ``audio_processor/tiny.pt`` which is not a plain
state dict, …) are copied unchanged, so ``DST`` is a complete model folder that :func:`load_models` reads.
Reading and writing go through :mod:`echomimic_core.checkpoints.state_dict` (safe ``weights_only`` reads;
a file that would need code execution is refused; atomic writes read back and verified bit for bit).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .errors import CheckpointError, EchoMimicError, NotAStateDictError

# echomimic_core.checkpoints (torch, diffusers: seconds to import) is imported where it is used, so that
# `--help` and usage errors answer at once

__all__ = ["convert_file", "convert_folder", "main"]


def _target(src: Path, to: str) -> Path:
    if to == "safetensors":
        return src.with_suffix(".safetensors")
    # diffusers folders (base unet, VAE) look for diffusion_pytorch_model.bin
    return src.with_suffix(".bin" if src.stem == "diffusion_pytorch_model" else ".pth")


def convert_file(src: Path, dst: Path) -> int:
    """Convert one state-dict file (format chosen by ``dst``'s suffix); returns the number of tensors."""
    from .checkpoints import read_state_dict, save_state_dict

    sd = read_state_dict(src)
    save_state_dict(sd, dst, verify=True)
    return len(sd)


def _read_if_state_dict(path: Path):
    """The state dict, or None for a readable file that is not a plain state dict (copied as is)."""
    from .checkpoints import read_state_dict

    try:
        return read_state_dict(path)
    except NotAStateDictError:
        return None


def convert_folder(src: Path, dst: Path, to: str = "safetensors", overwrite: bool = False,
                   log=print) -> List[Tuple[Path, Path, str]]:
    """Convert every state-dict file of ``src`` to format ``to`` under ``dst``; copy everything else.
    Returns ``(source, destination, action)`` rows."""
    from .checkpoints import PICKLE_SUFFIXES, save_state_dict

    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise CheckpointError(f"{dst}: the destination must not be the source folder or inside it")
    rows = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        convertible = (path.suffix in PICKLE_SUFFIXES and to == "safetensors") or \
                      (path.suffix == ".safetensors" and to == "pth")
        sd = _read_if_state_dict(path) if convertible else None
        out = _target(dst / rel, to) if sd is not None else dst / rel
        if out.exists() and not overwrite:
            raise CheckpointError(f"{out} already exists; pass --overwrite to replace it")
        out.parent.mkdir(parents=True, exist_ok=True)
        if sd is not None:
            save_state_dict(sd, out, verify=True)
            action = f"converted ({len(sd)} tensors, verified identical)"
        else:
            action = "copied"
            shutil.copyfile(path, out)
        log(f"{rel} -> {out.relative_to(dst)}: {action}")
        rows.append((path, out, action))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m echomimic_core.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="model folder or a single checkpoint file")
    parser.add_argument("dst", type=Path, help="output folder (or file when SRC is a file)")
    parser.add_argument("--to", choices=("safetensors", "pth"), default=None,
                        help="target format (default: safetensors, or pth when SRC is a .safetensors file)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in DST")
    args = parser.parse_args(argv)
    try:
        if args.src.is_file():
            to = args.to or ("pth" if args.src.suffix == ".safetensors" else "safetensors")
            dst = args.dst
            if dst.is_dir() or not dst.suffix:
                dst = _target(dst / args.src.name, to)
            if dst.exists() and not args.overwrite:
                raise CheckpointError(f"{dst} already exists; pass --overwrite to replace it")
            n = convert_file(args.src, dst)
            print(f"{args.src} -> {dst}: {n} tensors, verified identical")
        elif args.src.is_dir():
            rows = convert_folder(args.src, args.dst, args.to or "safetensors", args.overwrite)
            done = sum(1 for r in rows if r[2].startswith("converted"))
            print(f"{done} file(s) converted, {len(rows) - done} copied into {args.dst}")
        else:
            print(f"error: {args.src} does not exist", file=sys.stderr)
            return 2
    except EchoMimicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
