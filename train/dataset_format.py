"""The training dataset format `echomimic-v2-train/1` on disk (train/README.md "Dataset folder format"):
constants, the clip/index writers (used by preprocess.py, the tiny test dataset and, for its constants
and byte-deterministic npz/wav writers, synthetic.py) and the clip reader. One place for the format;
sampling and batches live in train/data.py.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import wave
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from echomimic_core.errors import InputError

FPS = 24
SAMPLE_RATE = 16000
FORMAT = "echomimic-v2-train/1"
KP_ARRAYS = {
    "bodies": (18, 2), "bodies_score": (18,),
    "hands": (2, 21, 2), "hands_score": (2, 21),
    "faces": (68, 2), "faces_score": (68,),
}


def save_npz(path: Path, **arrays) -> None:
    """``np.savez`` with fixed zip timestamps, so identical arrays give identical bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


# ------------------------------------------------------------------------------------------------
# writing (preprocess, synthetic data, tests)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM mono wav from int16 samples, or floats in [-1, 1] (× 32767, rounded, clipped to int16)."""
    x = np.asarray(samples)
    if x.dtype != np.int16:
        x = np.clip(np.round(x.astype(np.float64) * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(x.tobytes())


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """16-bit PCM wav → float32 mono in [-1, 1] and its sample rate."""
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise InputError(f"{path}: expected 16-bit PCM")
        n, ch, sr = f.getnframes(), f.getnchannels(), f.getframerate()
        data = np.frombuffer(f.readframes(n), dtype=np.int16).astype(np.float32) / 32768.0
    if ch > 1:
        data = data.reshape(-1, ch).mean(1)
    return data, sr


def empty_keypoints(num_frames: int) -> dict:
    out = {}
    for k, shape in KP_ARRAYS.items():
        fill = 0.0 if k.endswith("score") else -1.0
        out[k] = np.full((num_frames,) + shape, fill, dtype=np.float32)
    return out


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def write_clip(root: str | os.PathLike, clip_id: str, frames: Iterable[np.ndarray], audio: np.ndarray,
               keypoints: dict, *, fps: int = 24, kind: str = "halfbody",
               content_box: Sequence[float] = (0.0, 0.0, 1.0, 1.0), regions: dict | None = None,
               audio_features: np.ndarray | None = None, audio_encoder: str = "",
               source: str = "", image_ext: str = ".png") -> Path:
    """Write one clip in the dataset format. frames: RGB uint8 [H, W, 3] each (any iterable: written one at a
    time); audio: 16 kHz mono. image_ext ".png"/".jpg": frames/NNNNNN.ext; ".mp4": one frames.mp4
    (train/clip_video.py)."""
    root = Path(root)
    d = root / "clips" / clip_id
    d.mkdir(parents=True, exist_ok=True)
    size = []

    def checked():
        for i, fr in enumerate(frames):
            if not size:
                size.extend(fr.shape[:2])
            if tuple(fr.shape[:2]) != tuple(size):
                raise InputError(f"clip {clip_id}: frame {i} has size {fr.shape[:2]}, expected {tuple(size)}")
            yield fr

    if image_ext == ".mp4":
        from train.clip_video import FRAMES_MP4, write_frames_mp4

        num = write_frames_mp4(d / FRAMES_MP4, checked(), fps)
    else:
        (d / "frames").mkdir(exist_ok=True)
        num = 0
        for i, fr in enumerate(checked()):
            cv2.imwrite(str(d / "frames" / f"{i:06d}{image_ext}"), cv2.cvtColor(np.ascontiguousarray(fr),
                                                                               cv2.COLOR_RGB2BGR))
            num += 1
    if not num:
        raise InputError(f"clip {clip_id}: no frames")
    h, w = size
    write_wav(d / "audio.wav", audio, 16000)
    kp = {k: np.asarray(keypoints[k], dtype=np.float32) for k in KP_ARRAYS}
    for k, shape in KP_ARRAYS.items():
        if kp[k].shape != (num,) + shape:
            raise InputError(f"keypoints[{k!r}] has shape {kp[k].shape}, expected {(num,) + shape}")
    save_npz(d / "keypoints.npz", **kp)
    if regions is not None:
        save_npz(d / "regions.npz", **{k: np.asarray(v, dtype=np.float32) for k, v in regions.items()})
    if audio_features is not None:
        np.save(d / "audio_features.npy", np.asarray(audio_features, dtype=np.float16))
        (d / "audio_features.json").write_text(json.dumps(
            {"encoder": audio_encoder, "tokens": int(audio_features.shape[1])}))
    meta = {"num_frames": num, "fps": fps, "width": int(w), "height": int(h), "kind": kind,
            "content_box": [float(v) for v in content_box], "source": source}
    write_json_atomic(d / "meta.json", meta)  # meta.json last: its presence marks a complete clip
    return d


def write_index(root: str | os.PathLike, fps: int = 24, bad_clips: dict | None = None) -> None:
    root = Path(root)
    clips = sorted(p.name for p in (root / "clips").iterdir() if (p / "meta.json").is_file())
    idx = {"format": FORMAT, "fps": fps, "sample_rate": 16000, "clips": clips, "bad_clips": bad_clips or {}}
    write_json_atomic(root / "dataset.json", idx)


# ------------------------------------------------------------------------------------------------
# reading


@dataclass
class Clip:
    path: Path
    clip_id: str
    num_frames: int
    width: int
    height: int
    kind: str
    content_box: tuple
    fps: int


def list_clips(roots: Sequence[str | os.PathLike], kinds: Sequence[str] | None = None,
               min_frames: int = 1, bad_clips=None) -> list[Clip]:
    """The clips of the dataset roots. A clip whose ``meta.json`` is missing or damaged is skipped and
    recorded in ``bad_clips`` (a train.bad_clips.BadClips) when given, else skipped with a warning."""
    out = []
    for root in roots:
        root = Path(root)
        idx_path = root / "dataset.json"
        if idx_path.is_file():
            idx = json.loads(idx_path.read_text())
            if idx.get("format", FORMAT) != FORMAT:
                raise InputError(f"{idx_path}: unsupported format {idx.get('format')!r}, expected {FORMAT}")
            ids = idx["clips"]
        elif (root / "clips").is_dir():
            ids = sorted(p.name for p in (root / "clips").iterdir() if (p / "meta.json").is_file())
        else:
            raise FileNotFoundError(f"{root}: not a training dataset (no dataset.json and no clips/); see train/README.md")
        for cid in ids:
            d = root / "clips" / cid
            try:
                meta = json.loads((d / "meta.json").read_text())
                num_frames, width, height = int(meta["num_frames"]), int(meta["width"]), int(meta["height"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                error = InputError(f"{d / 'meta.json'} is missing or damaged ({type(exc).__name__}: {exc})")
                if bad_clips is not None:
                    bad_clips.record(d, error)
                else:
                    warnings.warn(f"skipping clip: {error}")
                continue
            if kinds and meta.get("kind", "halfbody") not in kinds:
                continue
            if meta["num_frames"] < min_frames:
                warnings.warn(f"clip {d} has {meta['num_frames']} frames < {min_frames} needed; skipped")
                continue
            out.append(Clip(d, cid, num_frames, width, height,
                            meta.get("kind", "halfbody"), tuple(meta.get("content_box", (0, 0, 1, 1))),
                            int(meta.get("fps", 24))))
    return out


def _frame_path(clip: Clip, i: int) -> Path:
    for ext in (".png", ".jpg", ".jpeg"):
        p = clip.path / "frames" / f"{i:06d}{ext}"
        if p.is_file():
            return p
    raise FileNotFoundError(f"{clip.path}/frames/{i:06d}.png (or .jpg) missing")


def load_frame(clip: Clip, i: int, size: int, box: np.ndarray | None = None, video=None) -> np.ndarray:
    """Frame i as RGB uint8 [size, size, 3]; `box` (normalised xyxy) crops it first (train/augment.py).
    Clips with a frames.mp4 are decoded through `video` (a clip_video.Mp4Frames kept by the caller) or
    a reader opened for this call."""
    if (clip.path / "frames.mp4").is_file():
        from train.clip_video import Mp4Frames

        img = (video or Mp4Frames(clip.path / "frames.mp4", clip.fps)).frame(i)
    else:
        img = cv2.imread(str(_frame_path(clip, i)), cv2.IMREAD_COLOR)
        if img is None:
            raise IOError(f"cannot read frame {i} of {clip.path}")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if box is not None:
        from train.augment import crop_pixels

        img = crop_pixels(img, box)
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR)
    return img


def load_cached_audio_features(clip: Clip) -> np.ndarray:
    p = clip.path / "audio_features.npy"
    if not p.is_file():
        raise FileNotFoundError(f"{p} missing: cache it with python train/features.py DATASET --audio-encoder tiny.pt")
    return np.load(p, mmap_mode="r")

