"""Write the demo inputs shipped in ``echomimic_core/assets/demo/`` from one synthetic clip.

    python train/make_demo_assets.py CLIP_DIR [--out echomimic_core/assets/demo]

CLIP_DIR is a clip folder written by ``train/synthetic.py`` (normally a HELD-OUT clip: a figure, a voice
and a hand motion the demo model never saw). Written:

    reference.png   the clip's frame 0 (the reference figure)
    audio.wav       the clip's 16 kHz mono PCM16 speech
    poses.npz       the clip's hand poses in this package's single-file pose format (echomimic_v2.pose_sequence)
    source.json     where they came from (clip, generator settings, audio source)

The sampling defaults of the embedded demo model live in ``demo.json`` beside them (hand-written).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "echomimic_core" / "assets" / "demo"


def write_assets(clip_dir: str | Path, out: str | Path = DEFAULT_OUT) -> Path:
    from echomimic_core.pose import load_pose_sequence, save_pose_sequence

    clip, out = Path(clip_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads((clip / "meta.json").read_text())
    shutil.copyfile(clip / "frames" / "000000.png", out / "reference.png")
    shutil.copyfile(clip / "audio.wav", out / "audio.wav")
    seq = load_pose_sequence(clip / "pose", fps=float(meta.get("fps", 24)))
    save_pose_sequence(seq, out / "poses.npz")
    syn = meta.get("synthetic", {})
    (out / "source.json").write_text(json.dumps({
        "clip": clip.name, "num_frames": meta["num_frames"], "fps": meta["fps"],
        "size": [meta["width"], meta["height"]], "heldout": syn.get("heldout"),
        "audio_source": syn.get("audio_source"), "clip_seed": syn.get("clip_seed"),
        "generator_version": syn.get("generator_version"),
        "made_by": "train/make_demo_assets.py from a train/synthetic.py clip (see train/make_demo_model.sh)",
        "licence": "synthetic figure and poses generated here; the speech comes from the project's own "
                   "shared/media/audio files (made for this project, redistributable)",
    }, indent=1) + "\n")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip_dir")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    a = ap.parse_args(argv)
    print(json.dumps({"out": str(write_assets(a.clip_dir, a.out))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
