"""Cache the whisper windows of a dataset's clips (`clips/<id>/audio_features.npy`), so no training run
ever computes them (with `data.audio_features: cached`, the real-data configs' setting, the trainer
refuses clips without them instead of computing on rank 0 while the other ranks wait).

    python train/features.py DATASET [DATASET ...] --audio-encoder pretrained_weights/audio_processor/tiny.pt
        [--shard i/n] [--overwrite]

`train/preprocess.py` writes the same file for every clip it makes; this command is for datasets made
another way (e.g. `train/synthetic.py`) or before an encoder was at hand. Shards split the clips
by position in the sorted list (`--shard 0/4` … `3/4`, one per process or machine). Interruptible and
resumable: a clip is done when its `.npy` exists (written through a temporary file and a rename).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from echomimic_core.errors import ConfigError
from train import data as D


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' → (i, n) with 0 <= i < n; None → (0, 1)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return i, n


def cache_features(roots, encoder_path: str, shard: tuple[int, int] = (0, 1), overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Write audio_features.npy (+ .json) for the shard's clips of `roots`; returns counts."""
    clips = sorted(D.list_clips(roots), key=lambda c: str(c.path))
    mine = [c for k, c in enumerate(clips) if k % shard[1] == shard[0]]
    todo = [c for c in mine if overwrite or not (c.path / "audio_features.npy").is_file()]
    out = {"clips": len(mine), "written": 0, "present": len(mine) - len(todo)}
    if not todo:
        return out
    if not Path(encoder_path).is_file():
        raise FileNotFoundError(f"--audio-encoder {encoder_path} not found (the whisper tiny.pt of pretrained_weights/"
                                "audio_processor/)")
    from tqdm.auto import tqdm

    from echomimic_core.audio import load_audio_encoder

    enc = load_audio_encoder(encoder_path)
    for c in tqdm(todo, desc="whisper windows", disable=not progress):
        arr = D.compute_audio_features(c.path / "audio.wav", enc, c.fps, c.num_frames)
        tmp = c.path / "audio_features.tmp.npy"
        np.save(tmp, arr)
        os.replace(tmp, c.path / "audio_features.npy")
        D.write_json_atomic(c.path / "audio_features.json", {"encoder": str(encoder_path), "tokens": int(arr.shape[1])})
        out["written"] += 1
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--audio-encoder", required=True, help="whisper tiny.pt")
    ap.add_argument("--shard", default=None, help="i/n: this process's share of the clips")
    ap.add_argument("--overwrite", action="store_true", help="recompute clips that already have features")
    a = ap.parse_args(argv)
    try:
        shard = parse_shard(a.shard)
    except ValueError as e:
        ap.error(str(e))
    print(json.dumps(cache_features(a.datasets, a.audio_encoder, shard, a.overwrite)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
