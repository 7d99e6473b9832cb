"""Build a training dataset (train/README.md format) from plain video files.

    python train/preprocess.py VIDEOS_DIR OUT_DIR [--resolution 768] [--pose dwpose|mediapipe]
        [--dwpose-dir DIR] [--audio-encoder pretrained_weights/audio_processor/tiny.pt] [--kind halfbody]
        [--image-ext .mp4|.png|.jpg] [--min-frames 2] [--max-frames N] [--bottom-margin 0.5] [--retry-bad]
        [--shard i/n]

Per video (mp4/mov/mkv/webm/avi, searched recursively), in the official EMTD preprocessing order:
  1. decode at 24 fps (frames picked by timestamp) and the audio at 16 kHz mono (PyAV);
  2. whole-body keypoints per frame with the pose extractor (DWPose ONNX or mediapipe);
  3. one square upper-body box for the clip (get_pose_params, EMTD bottom margin 0.5), every frame
     cropped to it and resized/padded to the resolution, keypoints re-normalised to the stored frame;
  4. lips/head/hands boxes (regions.npz) and the whisper windows (audio_features.npy, fp16): always
     cached here (the CLI requires --audio-encoder), so training never computes them.
Frames are decoded twice and streamed (pass 1: keypoints; pass 2: crop and write), never held in memory;
`--image-ext .mp4` (the CLI default) stores one H.264 frames.mp4 per clip (train/clip_video.py) instead of
PNG files. `--shard i/n` processes every n-th video from the i-th (one process or machine per shard,
same OUT_DIR); shards write bad_clips.<i>of<n>.json and no dataset.json (the trainer then lists clips/;
`--shard` omitted afterwards writes the index). Resumable: a clip whose meta.json exists is skipped; bad clips (unreadable, no audio, no person, too
short) are reported and listed in OUT_DIR/bad_clips.json (skipped on reruns unless --retry-bad).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from train import data as D

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


class BadClip(Exception):
    pass


def clip_id_for(path: Path, root: Path) -> str:
    rel = str(path.relative_to(root))
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", str(Path(rel).with_suffix("")))[:60].strip("_") or "clip"
    return f"{stem}_{D.seed_of(rel) % 16**6:06x}"


def iter_frames_24(path: Path, fps: float = 24.0, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames resampled to `fps` by timestamp: output frame k is the last source frame whose
    time is ≤ k/fps (source frames are repeated or dropped as needed)."""
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:  # noqa: BLE001 - any open failure = bad clip
        raise BadClip(f"cannot open: {exc}") from None
    with container:
        if not container.streams.video:
            raise BadClip("no video stream")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or fps)
        start = float((stream.start_time or 0) * stream.time_base)
        k, prev, t_prev = 0, None, 0.0
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base) - start
                if prev is not None:
                    while k / fps < t - 1e-6:
                        yield prev
                        k += 1
                        if max_frames and k >= max_frames:
                            return
                prev, t_prev = frame.to_ndarray(format="rgb24"), t
        except Exception as exc:  # noqa: BLE001
            if prev is None:
                raise BadClip(f"cannot decode: {exc}") from None
        if prev is None:
            raise BadClip("no decodable frame")
        end = t_prev + 1.0 / rate
        while k / fps < end - 1e-6 and not (max_frames and k >= max_frames):
            yield prev
            k += 1


def crop_pad(img: np.ndarray, box: list[int]) -> np.ndarray:
    """img[h0:h1, w0:w1] with zero padding where the box leaves the image."""
    h0, h1, w0, w1 = (int(v) for v in box)
    out = np.zeros((h1 - h0, w1 - w0, 3), dtype=img.dtype)
    H, W = img.shape[:2]
    y0, y1, x0, x1 = max(h0, 0), min(h1, H), max(w0, 0), min(w1, W)
    if y1 > y0 and x1 > x0:
        out[y0 - h0:y1 - h0, x0 - w0:x1 - w0] = img[y0:y1, x0:x1]
    return out


def _box_placer(draw_params):
    """Keypoints normalised to the crop box → normalised to the stored frame (the box sits at
    draw_params' [rb:re, cb:ce] of the 768 canvas)."""
    _, _, rb, re_, cb, ce = (float(v) for v in draw_params)
    return lambda x, y: ((cb + x * (ce - cb)) / 768.0, (rb + y * (re_ - rb)) / 768.0)


def _frames_to_arrays(frames: list[dict], placer) -> dict:
    """Per-frame dicts → keypoints.npz arrays normalised to the stored frame (`placer(x, y)` maps the
    frames' normalised coordinates); missing points (≤ 0.01) become -1 with score 0."""
    from echomimic_core.pose.arrays import PoseArrays

    return PoseArrays.from_frames(frames, placer).as_dict()


HEADSHOT_HEAD_BOX = (0.5, 0.24, 0.26)
"""Where a padded headshot's face goes in the half-body layout: face-box centre x, y and face-box height,
as fractions of the output frame (about the head of the official demo half-body crops) [INFER]."""


def headshot_affine(detections: list[dict], H: int, W: int, R: int, head=HEADSHOT_HEAD_BOX):
    """Scale s and offset (ox, oy) mapping a talking-head video (pixels) into an R×R half-body-layout
    frame so the clip's face box lands on `head` (TRAINING.md §2 "headshot augmentation")."""
    from echomimic_core.pose import main_person

    pts = []
    for det in detections:
        f = np.asarray(main_person(det)["faces"], dtype=np.float64).reshape(-1, 68, 2)
        if len(f):
            ok = (f[0, :, 0] > 0.01) & (f[0, :, 1] > 0.01)
            pts.append(f[0][ok])
    pts = [p for p in pts if len(p)]
    if not pts:
        raise BadClip("no face found in the headshot clip")
    allp = np.concatenate(pts) * np.array([W, H])
    y0, y1 = np.percentile(allp[:, 1], 1), np.percentile(allp[:, 1], 99)
    cx, cy = float(np.median(allp[:, 0])), (y0 + y1) / 2
    s = head[2] * R / max(y1 - y0, 1.0)
    return s, head[0] * R - s * cx, head[1] * R - s * cy


def process_video(path: Path, out: Path, clip_id: str, extractor: Callable[[np.ndarray], dict], *,
                  resolution: int = 768, kind: str = "halfbody", audio_encoder=None, image_ext: str = ".png",
                  min_frames: int = 2, max_frames: int | None = None, bottom_margin: float = 0.5,
                  head_box=HEADSHOT_HEAD_BOX) -> Path:
    """One video → one clip. kind "headshot": the frames are scaled/padded so the face sits where a
    half-body head would (padding = black, outside content_box); other kinds: the official upper-body crop."""
    import cv2

    from echomimic_core.audio import load_waveform
    from echomimic_core.errors import InputError
    from echomimic_core.pose import main_person, resize_and_pad, sequence_from_detections

    try:
        audio = load_waveform(str(path))
    except Exception as exc:  # noqa: BLE001
        if kind != "pose":
            raise BadClip(f"no usable audio: {exc}") from None
        audio = np.zeros(0, np.float32)
    # pass 1: keypoints only (frames are not kept)
    detections, size = [], None
    for k, img in enumerate(iter_frames_24(path, max_frames=max_frames)):
        size = img.shape[:2]
        det = extractor(img)
        det["num"] = k
        detections.append(det)
    if len(detections) < min_frames:
        raise BadClip(f"{len(detections)} frames < min_frames {min_frames}")
    H, W = size
    if kind == "headshot":
        R = resolution
        sc, ox, oy = headshot_affine(detections, H, W, R, head_box)
        kp = _frames_to_arrays([main_person(d) for d in detections],
                               lambda x, y: ((x * W * sc + ox) / R, (y * H * sc + oy) / R))
        content = [max(ox / R, 0.0), max(oy / R, 0.0), min((W * sc + ox) / R, 1.0), min((H * sc + oy) / R, 1.0)]
        M = np.array([[sc, 0, ox], [0, sc, oy]], dtype=np.float64)
        frames = (cv2.warpAffine(img, M, (R, R), flags=cv2.INTER_AREA if sc < 1 else cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
                  for img in iter_frames_24(path, max_frames=len(detections)))
    else:
        try:
            seq, params = sequence_from_detections(detections, H, W, 768, bottom_margin)
        except InputError as exc:
            raise BadClip(f"no usable person: {exc}") from None
        h0, h1, w0, w1 = params["video_params"]
        dp = params["draw_pose_params"]
        kp = _frames_to_arrays(seq.frames, _box_placer(dp))
        # content box: the part of the stored frame that shows the video (not crop/pad padding)
        cx0, cx1 = (max(w0, 0) - w0) / (w1 - w0), (min(w1, W) - w0) / (w1 - w0)
        cy0, cy1 = (max(h0, 0) - h0) / (h1 - h0), (min(h1, H) - h0) / (h1 - h0)
        rb, re_, cb, ce = dp[2], dp[3], dp[4], dp[5]
        content = [(cb + cx0 * (ce - cb)) / 768, (rb + cy0 * (re_ - rb)) / 768,
                   (cb + cx1 * (ce - cb)) / 768, (rb + cy1 * (re_ - rb)) / 768]
        # pass 2 (streamed into the clip writer): crop + resize/pad the frames
        def crop_frames():
            for img in iter_frames_24(path, max_frames=len(detections)):
                sq, _ = resize_and_pad(crop_pad(img, [h0, h1, w0, w1]), 768)
                if resolution != 768:
                    sq = cv2.resize(sq, (resolution, resolution), interpolation=cv2.INTER_AREA)
                yield sq

        frames = crop_frames()
    # the same decode as pass 1, so pass 2 yields len(detections) frames (write_clip checks the count)
    n = len(detections)
    kp = {k: v[:n] for k, v in kp.items()}
    need = int(round(n / 24 * 16000))
    if len(audio) < need:
        audio = np.concatenate([audio, np.zeros(need - len(audio), np.float32)])
    feats = None
    if audio_encoder is not None:  # pose clips too (silence): every clip then has the same files
        tmp = out / "clips" / f".{clip_id}.wav"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        D.write_wav(tmp, audio[:need])
        try:
            feats = D.compute_audio_features(tmp, audio_encoder, 24, n)
        finally:
            tmp.unlink(missing_ok=True)
    regions = D.default_regions(kp)
    return D.write_clip(out, clip_id, frames, audio[:need], kp, kind=kind, content_box=content, regions=regions,
                        audio_features=feats, audio_encoder=str(getattr(audio_encoder, "source", "whisper")),
                        source=str(path), image_ext=image_ext)


def make_extractor(name: str, dwpose_dir: str | None = None):
    """The named backend of echomimic_core's pose registry (``dwpose_dir``: its model-file folder)."""
    from echomimic_core.pose.backends import create_extractor

    return create_extractor(name, model_dir=dwpose_dir)


def preprocess(videos_dir, out_dir, extractor, *, audio_encoder=None, resolution: int = 768, kind: str = "halfbody",
               image_ext: str = ".png", min_frames: int = 2, max_frames: int | None = None,
               bottom_margin: float = 0.5, retry_bad: bool = False, log=print, shard: tuple[int, int] = (0, 1)) -> dict:
    """Process every video under videos_dir (this shard's share); returns {"done": [...], "skipped": [...],
    "bad": {name: reason}}."""
    videos_dir, out = Path(videos_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    i_sh, n_sh = shard
    bad_path = out / ("bad_clips.json" if n_sh == 1 else f"bad_clips.{i_sh}of{n_sh}.json")
    bad = json.loads(bad_path.read_text()) if bad_path.is_file() else {}
    videos = sorted(p for p in videos_dir.rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())
    videos = videos[i_sh::n_sh]
    result = {"done": [], "skipped": [], "bad": {}}
    for i, path in enumerate(videos):
        rel = str(path.relative_to(videos_dir))
        cid = clip_id_for(path, videos_dir)
        if (out / "clips" / cid / "meta.json").is_file():
            result["skipped"].append(rel)
            continue
        if rel in bad and not retry_bad:
            result["skipped"].append(rel)
            continue
        t0 = time.time()
        partial = out / "clips" / cid
        if partial.exists():
            shutil.rmtree(partial)  # an interrupted earlier attempt
        try:
            process_video(path, out, cid, extractor, resolution=resolution, kind=kind, audio_encoder=audio_encoder,
                          image_ext=image_ext, min_frames=min_frames, max_frames=max_frames,
                          bottom_margin=bottom_margin)
        except BadClip as exc:
            bad[rel] = str(exc)
            result["bad"][rel] = str(exc)
            shutil.rmtree(partial, ignore_errors=True)
            log(f"[{i + 1}/{len(videos)}] BAD {rel}: {exc}")
            D.write_json_atomic(bad_path, bad)
            continue
        bad.pop(rel, None)
        result["done"].append(rel)
        log(f"[{i + 1}/{len(videos)}] ok {rel} -> clips/{cid} ({time.time() - t0:.1f}s)")
    D.write_json_atomic(bad_path, bad)
    if n_sh == 1 and (out / "clips").is_dir():  # shards run concurrently: only an unsharded run writes the index
        for part in sorted(out.glob("bad_clips.*of*.json")):
            bad.update(json.loads(part.read_text()))
        D.write_index(out, 24, bad)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--resolution", type=int, default=768)
    from echomimic_core.pose.backends import backend_names

    ap.add_argument("--pose", default="dwpose", choices=backend_names())
    ap.add_argument("--dwpose-dir", default=None, help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx")
    ap.add_argument("--audio-encoder", required=True,
                    help="whisper tiny.pt: the audio features are cached with the clips (training never computes them)")
    ap.add_argument("--kind", default="halfbody", choices=["halfbody", "headshot", "pose"])
    ap.add_argument("--image-ext", default=".mp4", choices=[".mp4", ".png", ".jpg"],
                    help=".mp4: one H.264 frames.mp4 per clip (compact, the default); .png/.jpg: a file per frame")
    ap.add_argument("--shard", default=None, help="i/n: process every n-th video starting at the i-th")
    ap.add_argument("--min-frames", type=int, default=2)
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--bottom-margin", type=float, default=0.5, help="0.5 = EMTD preprocess.py, 0.05 = demo notebook")
    ap.add_argument("--retry-bad", action="store_true", help="try the clips listed in bad_clips.json again")
    a = ap.parse_args(argv)
    from train.features import parse_shard

    try:
        shard = parse_shard(a.shard)
    except ValueError as e:
        ap.error(str(e))
    extractor = make_extractor(a.pose, a.dwpose_dir)
    enc = None
    if a.audio_encoder:
        from echomimic_core.audio import load_audio_encoder

        enc = load_audio_encoder(a.audio_encoder)
    r = preprocess(a.videos_dir, a.out_dir, extractor, audio_encoder=enc, resolution=a.resolution, kind=a.kind,
                   image_ext=a.image_ext, min_frames=a.min_frames, max_frames=a.max_frames,
                   bottom_margin=a.bottom_margin, retry_bad=a.retry_bad, shard=shard)
    print(json.dumps({"done": len(r["done"]), "skipped": len(r["skipped"]), "bad": r["bad"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
