"""Preprocessing throughput per core and dataset storage per hour of video (train/preprocess.py), by hand:

    OMP_NUM_THREADS=1 python bench/train_data.py [--seconds 5] [--resolution 768] [--pose mediapipe]

The source is a generated 24 fps video: a shipped half-body reference photo with a slow camera pan/zoom
and the shared speech file (no real talking video ships with the repository, so the mp4 sizes are a lower
bound for real footage with moving people). Prints one table: seconds of processing per second of
video on one core, and bytes per hour of video for each stored part and frame format.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"


def make_source(path: Path, seconds: float, size: int = 1024) -> None:
    import av
    import cv2

    from echomimic_core.audio import load_waveform

    img = cv2.cvtColor(cv2.imread(str(SHARED / "media" / "ref_images" / "echomimicv2_demo_0014.png")), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    audio = load_waveform(str(SHARED / "media" / "audio" / "speech_en_8s_16k_mono.wav"))
    n = int(seconds * 24)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=24, options={"crf": "18"})
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        a_s = c.add_stream("aac", rate=16000)
        a_s.layout = "mono"
        for k in range(n):
            s = 1.0 + 0.05 * np.sin(k / 30)
            m = cv2.getRotationMatrix2D((size / 2 + 10 * np.sin(k / 17), size / 2), 0.5 * np.sin(k / 23), s)
            fr = cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REFLECT)
            for p in vs.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        pcm = (np.resize(audio, int(16000 * seconds)) * 32767).astype(np.int16)[None]
        for i in range(0, pcm.shape[1], 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + 1024]), format="s16", layout="mono")
            fr.sample_rate = 16000
            for p in a_s.encode(fr):
                c.mux(p)
        for p in a_s.encode():
            c.mux(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--resolution", type=int, default=768)
    ap.add_argument("--pose", default="mediapipe", choices=["mediapipe", "dwpose"])
    ap.add_argument("--dwpose-dir", default=None)
    ap.add_argument("--audio-encoder", default=str(SHARED / "fixtures" / "weights" / "audio_processor" / "tiny.pt"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from echomimic_core.audio import load_audio_encoder
    from train.preprocess import make_extractor, preprocess

    per_hour = 3600.0 / a.seconds
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "v").mkdir()
        make_source(tmp / "v" / "talk.mp4", a.seconds)
        enc = load_audio_encoder(a.audio_encoder)
        sizes = {}
        for ext in (".mp4", ".jpg", ".png"):
            t0 = time.perf_counter()
            r = preprocess(tmp / "v", tmp / ext[1:], make_extractor(a.pose, a.dwpose_dir), audio_encoder=enc,
                           resolution=a.resolution, image_ext=ext, log=lambda *_: None)
            dt = time.perf_counter() - t0
            assert r["done"], r
            clip = next((tmp / ext[1:] / "clips").iterdir())
            frames = clip / "frames.mp4" if ext == ".mp4" else clip / "frames"
            fb = frames.stat().st_size if frames.is_file() else sum(f.stat().st_size for f in frames.iterdir())
            sizes[ext] = fb
            rows.append((f"frames {ext[1:]} ({a.resolution}²)", dt / a.seconds, fb * per_hour))
            if ext == ".mp4":
                for name in ("keypoints.npz", "regions.npz", "audio.wav", "audio_features.npy"):
                    rows.append((name, None, (clip / name).stat().st_size * per_hour))
                feats = np.load(clip / "audio_features.npy", mmap_mode="r")
                rows.append(("audio_features.npy at whisper-tiny's [F, 50, 384] fp16", None,
                             24 * 3600 * 50 * 384 * 2.0))
                rows.append((f"(fixture encoder here: [F, {feats.shape[1]}, {feats.shape[2]}])", None, None))
    print(f"\n{a.seconds:.0f} s of 1024² 24 fps video -> {a.resolution}² dataset, pose {a.pose}, 1 thread, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB\n")
    print(f"| part | processing s per video s (1 core) | storage per hour of video |")
    print("|---|---|---|")
    for name, speed, size in rows:
        sp = f"{speed:.2f}" if speed is not None else ""
        sz = f"{size / 2**30:.2f} GiB" if size and size > 2**30 else (f"{size / 2**20:.1f} MiB" if size else "")
        print(f"| {name} | {sp} | {sz} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
