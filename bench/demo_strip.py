"""A frame strip (PNG) of a demo video, for the README.

    python bench/demo_strip.py VIDEO.mp4 OUT.png [--frames 8] [--reference echomimic_core/assets/demo/reference.png]
                               [--poses echomimic_core/assets/demo/poses.npz] [--cell 160]

Row 1: the reference image, then evenly spaced frames of the video. With --poses, row 2: the hand-pose
maps the model was given for those frames (the hands-only drawing of the inference path).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))


def read_video(path: str | Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def make_strip(video: str | Path, out: str | Path, frames: int = 8, reference: str | Path | None = None,
               poses: str | Path | None = None, cell: int = 160) -> Path:
    from PIL import Image, ImageDraw

    vid = read_video(video)
    idx = np.linspace(0, len(vid) - 1, frames).round().astype(int)
    cells, labels = [], []
    if reference:
        cells.append(np.asarray(Image.open(reference).convert("RGB")))
        labels.append("reference")
    for i in idx:
        cells.append(vid[i])
        labels.append(f"frame {i}")
    rows = [cells]
    if poses:
        from echomimic_core.pose import draw_hands, load_pose_sequence

        seq = load_pose_sequence(poses)
        prow = [np.zeros_like(cells[0])] if reference else []
        for i in idx:
            frame = seq[int(i) % len(seq)]
            prow.append(draw_hands(frame, 256, 256, seq.draw_params))
        rows.append(prow)
    pad, top = 4, 18
    w = len(rows[0]) * (cell + pad) + pad
    h = len(rows) * (cell + pad) + pad + top
    canvas = Image.new("RGB", (w, h), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            im = Image.fromarray(np.asarray(img, dtype=np.uint8)).resize((cell, cell), Image.NEAREST)
            x, y = pad + c * (cell + pad), top + pad + r * (cell + pad)
            canvas.paste(im, (x, y))
            if r == 0:
                draw.text((x + 2, 3), labels[c], fill=(220, 220, 220))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video")
    ap.add_argument("out")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--reference", default=None)
    ap.add_argument("--poses", default=None)
    ap.add_argument("--cell", type=int, default=160)
    a = ap.parse_args(argv)
    print(make_strip(a.video, a.out, a.frames, a.reference, a.poses, a.cell))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
