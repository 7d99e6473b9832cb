"""EMTD benchmark (EchoMimicV2 paper, Table 2): cut + preprocess the test clips, generate, score.

    python bench/emtd.py prepare --list echomimicv2_benchmark_url+start_timecode+end_timecode.txt \
        --videos ORI_VIDEO_DIR --out EMTD_DATA [--pose dwpose --dwpose-dir DIR] [--resolution 768]
    python bench/emtd.py run --data EMTD_DATA --models MODELS --out EMTD_OUT [--metrics paper]
        [--weights EVAL_WEIGHTS] [--max-clips N] [--max-frames N] [-- extra generate flags ...]
    python bench/emtd.py score --data EMTD_DATA --pred EMTD_OUT [--metrics paper] [--weights DIR]

The official EMTD list (``EMTD_dataset/echomimicv2_benchmark_url+start_timecode+end_timecode.txt`` in
the official repository; not shipped here) is a CSV with the header ``URL,Start Timecode,End Timecode``
and one segment per row: a YouTube watch URL and ``HH:MM:SS.mmm`` start/end times (110 segments of
65 TED videos). The source videos are downloaded by the user (the official ``download.py`` uses
yt-dlp, saving ``<youtube_id>.mp4``); nothing here touches the network.

``prepare`` follows the official order: (1) the official ``slice_video.py`` cut - segment ``k`` (0-based
row) of video ``ID`` becomes ``{k:03d}_{ID}.mp4``, trimmed by 3 source frames at each end
(start + 3/fps, end - 3/fps) - here with PyAV instead of the ffmpeg CLI, keeping the source frame rate
and the audio; (2) the official ``preprocess.py`` steps (24 fps, DWPose, one upper-body box with bottom
margin 0.5, 768 crop, 16 kHz audio), which ``train/preprocess.py`` already implements for our dataset
format - so this script runs it in a subprocess (one preprocessing path for training and benchmark;
no second copy here, and bench stays a caller of train's CLI rather than of its internals).

``run`` generates every clip with our pipeline through ``python -m echomimic_core generate`` (a
subprocess: the CLI is the stable interface) from the clip's frame 0 as the reference image, its
audio and its keypoints as the driving pose (hands and body, full canvas), at the clip's size and
length, resumable (existing outputs are kept), then scores like ``score``. ``score`` evaluates with
``echomimic_core.eval`` and prints the per-clip table and our summary row under the paper's rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from echomimic_core.errors import EchoMimicError, InputError  # noqa: E402

TRIM_FRAMES = 3  # official slice_video.py: start + 3/fps, end - 3/fps
EMTD_HEADER = ("URL", "Start Timecode", "End Timecode")
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov")


@dataclass(frozen=True)
class Segment:
    index: int
    video_id: str
    start: float
    end: float

    @property
    def name(self) -> str:
        return f"{self.index:03d}_{self.video_id}"


def parse_timecode(text: str) -> float:
    """``HH:MM:SS.mmm`` (or ``MM:SS.mmm`` / seconds) -> seconds."""
    parts = text.strip().split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"bad EMTD timecode {text!r}; expected HH:MM:SS.mmm") from None
    secs = 0.0
    for v in values:
        secs = secs * 60 + v
    return secs


def video_id_of(url: str) -> str:
    if "v=" in url:
        return url.split("v=", 1)[1].split("&", 1)[0]
    return url.rstrip("/").rsplit("/", 1)[-1]


def read_emtd_list(path: str | os.PathLike) -> list[Segment]:
    """The official EMTD CSV -> segments, numbered by row like the official slicer."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(c.strip() for c in rows[0][:3]) != EMTD_HEADER:
        raise InputError(f"{path}: not an EMTD list (first line must be {','.join(EMTD_HEADER)})")
    out = []
    for k, row in enumerate(r for r in rows[1:] if r and any(c.strip() for c in r)):
        if len(row) < 3:
            raise InputError(f"{path}: row {k + 2} has {len(row)} fields, expected URL,start,end")
        s, e = parse_timecode(row[1]), parse_timecode(row[2])
        if e <= s:
            raise InputError(f"{path}: row {k + 2} ends ({row[2]}) before it starts ({row[1]})")
        out.append(Segment(k, video_id_of(row[0].strip()), s, e))
    return out


def find_source(videos: Path, video_id: str) -> Path | None:
    for ext in VIDEO_EXTS:
        for name in (video_id, "v_" + video_id):  # the official preprocess renames ids starting with '-'
            if (videos / f"{name}{ext}").is_file():
                return videos / f"{name}{ext}"
    return None


def cut_segment(src: Path, seg: Segment, dst: Path, trim_frames: int = TRIM_FRAMES, crf: int = 12) -> Path:
    """Re-encode ``[start + trim/fps, end - trim/fps)`` of ``src`` (video at its own rate + audio) to ``dst``."""
    import av

    from echomimic_core.video import VideoWriter

    with av.open(str(src)) as c:
        vs = c.streams.video[0]
        fps = Fraction(vs.average_rate or vs.guessed_rate or 25)
        t0, t1 = seg.start + trim_frames / float(fps), seg.end - trim_frames / float(fps)
        audio = _audio_between(src, t0, t1)
        c.seek(int(max(t0 - 1.0, 0) / vs.time_base), stream=vs, backward=True)
        n = 0
        with VideoWriter(dst, fps=fps, audio=audio, crf=crf) as w:  # atomic: no partial file on failure
            for frame in c.decode(vs):
                t = float(frame.pts * vs.time_base) if frame.pts is not None else None
                if t is None or t < t0 - 1e-6:
                    continue
                if t >= t1 - 1e-6:
                    break
                w.write(frame.to_ndarray(format="rgb24"))
                n += 1
            if n == 0:
                raise InputError(f"{src}: no frames between {t0:.3f}s and {t1:.3f}s (segment {seg.name})")
    return dst


def _audio_between(src: Path, t0: float, t1: float):
    import av

    with av.open(str(src)) as c:
        if not c.streams.audio:
            return None
        a = c.streams.audio[0]
        rate = a.codec_context.sample_rate
        c.seek(int(max(t0 - 1.0, 0) / a.time_base), stream=a, backward=True)
        res = av.AudioResampler(format="fltp", layout="mono", rate=rate)
        chunks, first = [], None
        for frame in c.decode(a):
            if frame.pts is None:
                continue
            ts = float(frame.pts * a.time_base)
            if ts > t1:
                break
            for out in res.resample(frame):
                if first is None:
                    first = ts
                chunks.append(out.to_ndarray()[0])
    if not chunks:
        return None
    x = np.concatenate(chunks)
    s = max(int(round((t0 - first) * rate)), 0)
    return x[s:s + int(round((t1 - t0) * rate))].astype(np.float32), rate


def cmd_prepare(args) -> int:
    segs = read_emtd_list(args.list)
    videos, out = Path(args.videos), Path(args.out)
    cuts = out / "_cuts"
    cuts.mkdir(parents=True, exist_ok=True)
    missing = []
    for seg in segs[:args.max_clips] if args.max_clips else segs:
        dst = cuts / f"{seg.name}.mp4"
        if dst.is_file():
            continue
        src = find_source(videos, seg.video_id)
        if src is None:
            missing.append(seg.video_id)
            continue
        cut_segment(src, seg, dst)
        print(f"cut {seg.name} ({seg.end - seg.start:.1f}s)")
    if missing:
        print(f"{len(set(missing))} source videos not found in {videos} (expected <youtube_id>.mp4): "
              f"{sorted(set(missing))[:8]}", file=sys.stderr)
    cmd = [sys.executable, str(_REPO / "train" / "preprocess.py"), str(cuts), str(out), "--pose", args.pose,
           "--resolution", str(args.resolution), "--bottom-margin", "0.5"]
    if args.dwpose_dir:
        cmd += ["--dwpose-dir", args.dwpose_dir]
    print("preprocess:", " ".join(cmd))
    return subprocess.call(cmd)


def clip_poses(clip_dir: Path, dst: Path) -> Path:
    """keypoints.npz of a dataset clip -> our pose file (full canvas: keypoints are normalised to the frame)."""
    from echomimic_core.pose import PoseSequence, save_pose_sequence

    kp = np.load(clip_dir / "keypoints.npz", allow_pickle=False)
    frames = []
    for t in range(len(kp["bodies"])):
        score = kp["bodies_score"][t].astype(np.float64)
        frames.append({"bodies": {"candidate": kp["bodies"][t].astype(np.float64),
                                  "subset": np.where(score > 0.3, np.arange(18), -1)[None].astype(np.float64),
                                  "score": score[None]},
                       "hands": kp["hands"][t].astype(np.float64), "hands_score": kp["hands_score"][t].astype(np.float64),
                       "faces": kp["faces"][t][None].astype(np.float64), "faces_score": kp["faces_score"][t][None].astype(np.float64)})
    return save_pose_sequence(PoseSequence.from_frames(frames, fps=24.0), dst)


def dataset_clips(data: Path) -> list[Path]:
    root = data / "clips"
    if not root.is_dir():
        raise InputError(f"{data} is not a dataset folder (no clips/); run 'prepare' first")
    return sorted(p for p in root.iterdir() if (p / "meta.json").is_file())


def cmd_run(args, extra: list[str]) -> int:
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = dataset_clips(data)[:args.max_clips] if args.max_clips else dataset_clips(data)
    for i, clip in enumerate(clips):
        dst = out / f"{clip.name}.mp4"
        if dst.is_file():
            continue
        meta = json.loads((clip / "meta.json").read_text())
        inputs = out / "_inputs" / clip.name
        inputs.mkdir(parents=True, exist_ok=True)
        poses = clip_poses(clip, inputs / "poses.npz")
        frame0 = sorted((clip / "frames").iterdir())[0]
        n = min(int(meta["num_frames"]), args.max_frames or math.inf)
        cmd = [sys.executable, "-m", "echomimic_core", "generate", "--models", args.models, "--image", str(frame0),
               "--audio", str(clip / "audio.wav"), "--poses", str(poses), "--out", str(dst),
               "--width", str(meta["width"]), "--height", str(meta["height"]), "--max-frames", str(int(n)),
               "--quiet", *extra]
        print(f"[{i + 1}/{len(clips)}] generate {clip.name} ({n} frames)", flush=True)
        code = subprocess.call(cmd, cwd=str(_REPO))
        if code != 0:
            print(f"generate failed for {clip.name} (exit {code}); stopping", file=sys.stderr)
            return code
    args.pred = str(out)
    return cmd_score(args)


def cmd_score(args) -> int:
    from echomimic_core.eval import evaluate, format_table, paper_table, write_json

    result = evaluate(args.pred, args.data, metrics=args.metrics, allow_unpaired=True, weights_dir=args.weights,
                      pose=args.pose, dwpose_dir=args.dwpose_dir, device=args.device)
    print(format_table(result))
    print()
    label = args.label or f"ours ({Path(args.pred).name})"
    rows = {label: result["summary"]}
    if args.gt_row:  # the references scored against themselves: the ceiling of Sync, HKC, HKV, CSIM
        gt = evaluate(args.data, args.data, metrics=args.metrics, weights_dir=args.weights, pose=args.pose,
                      dwpose_dir=args.dwpose_dir, device=args.device)
        rows = {"ground truth (our protocol)": gt["summary"], **rows}
    print(paper_table(rows))
    print(f"\n{len(result['clips'])} clips; protocol: {json.dumps(result['protocol'])}")
    write_json(result, Path(args.pred) / "emtd_metrics.json")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="cut the EMTD segments and preprocess them into a dataset folder")
    p.add_argument("--list", required=True, help="the official echomimicv2_benchmark_url+start_timecode+end_timecode.txt")
    p.add_argument("--videos", required=True, help="folder of downloaded source videos <youtube_id>.mp4")
    p.add_argument("--out", required=True, help="dataset folder to write (train/README.md format)")
    p.add_argument("--resolution", type=int, default=768)
    p.add_argument("--max-clips", type=int, default=None)
    for q in (p, sub.add_parser("run", help="generate every clip with our pipeline, then score"),
              sub.add_parser("score", help="score generated clips against the dataset")):
        q.add_argument("--pose", default="dwpose", choices=["dwpose", "mediapipe"])
        q.add_argument("--dwpose-dir", default=None)
    r, s = sub.choices["run"], sub.choices["score"]
    r.add_argument("--models", required=True, help="model folder (official pretrained_weights layout)")
    r.add_argument("--out", required=True, help="folder for the generated <clip>.mp4")
    r.add_argument("--max-clips", type=int, default=None)
    r.add_argument("--max-frames", type=int, default=None, help="cap on frames per clip (a quick run)")
    s.add_argument("--pred", required=True, help="folder of generated <clip>.mp4")
    for q in (r, s):
        q.add_argument("--data", required=True, help="the prepared EMTD dataset folder")
        q.add_argument("--metrics", default="paper")
        q.add_argument("--weights", default=None, help="folder with the metric backbone files")
        q.add_argument("--device", default=None)
        q.add_argument("--label", default=None, help="row label in the table")
        q.add_argument("--gt-row", action="store_true", help="also score the references themselves (a ceiling row)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "prepare":
            return cmd_prepare(args)
        if args.cmd == "run":
            return cmd_run(args, extra)
        return cmd_score(args)
    except EchoMimicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
