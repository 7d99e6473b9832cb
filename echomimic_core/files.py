"""Walking user-supplied folders safely.

Model folders are often assembled from symlinks (a shared weights drive, `models/echomimic_v2/fp16 ->
..`), so links are followed, but a link cycle must not hang the caller (a ComfyUI loader blocked the
whole queue on a folder holding two links to itself): each real directory is entered once, and the
depth is capped.
"""

from __future__ import annotations

import os
from typing import Iterator

#: deeper than any model layout (pretrained_weights/sd-image-variations-diffusers/unet is depth 2)
MAX_WALK_DEPTH = 6


def walk_folder(root: str | os.PathLike, max_depth: int = MAX_WALK_DEPTH) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(root, followlinks=True)`` (sorted, top-down) that enters every real directory once
    (by device and inode) and goes at most ``max_depth`` levels below ``root``. Callers may prune
    ``dirnames`` in place like with ``os.walk``."""
    root = os.fspath(root)
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            dirnames[:] = []
            continue
        seen.add(key)
        rel = os.path.relpath(dirpath, root)
        depth = 0 if rel == "." else rel.count(os.sep) + 1
        if depth >= max_depth:
            dirnames[:] = []
        dirnames.sort()
        filenames.sort()
        yield dirpath, dirnames, filenames
