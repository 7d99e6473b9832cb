"""Synthetic talking figures whose hands gesture WITH the speech, for the gesture model.

``train/synthetic.py``'s figures move their hands along smooth random paths that ignore the audio
(right for the video model, useless for learning audio -> gesture). This generator reuses its
figures, speech sources, hand geometry, arm IK, pose layout and renderer, and replaces the hand
motion with a speech-driven one:

* **beats**: at every speech onset (:func:`echomimic_core.gesture.speech_onsets` on the speech
  envelope) one or both hands make a stroke - a quick 3-frame move (mostly downwards) that decays
  back over ~5 frames - with an amplitude that grows with the loudness of the syllable, and the
  fingers close a little during it;
* **gesture space**: the hands rise and spread while the figure talks (a smoothed envelope) and sink
  back to rest in pauses;
* a slow random drift (and seeded choices of hand, direction, amplitude) keeps clips different.

Output is the trainer's dataset format (``echomimic-v2-train/1``; with ``--size 0``, the default,
keypoints and audio only - no frames, the video trainer cannot use such clips), plus the
whisper windows ``audio_features.npy`` of the given audio encoder (the embedded demo model's by
default), so ``train/gesture.py`` reads it like any preprocessed dataset::

    python train/gesture_synth.py OUT_DIR --clips 144 --frames 120 --seed 0 [--encoder PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from echomimic_core.gesture import speech_envelope, speech_onsets  # noqa: E402
from train import synthetic as S  # noqa: E402
from train.data import compute_audio_features, write_json_atomic  # noqa: E402

DEFAULT_ENCODER = Path(__file__).resolve().parents[1] / "echomimic_core" / "assets" / "demo_model" / "audio_processor" / "tiny.pt"
STROKE_RISE, STROKE_DECAY = 3.0, 5.0


def stroke_profile(n: int, onset: int) -> np.ndarray:
    """[n] displacement profile of one beat starting at ``onset``: smoothstep up over 3 frames, then
    exponential return (time constant 5 frames)."""
    t = np.arange(n) - onset
    up = np.clip(t / STROKE_RISE, 0, 1)
    up = 3 * up ** 2 - 2 * up ** 3
    decay = np.where(t > STROKE_RISE, np.exp(-(t - STROKE_RISE) / STROKE_DECAY), 1.0)
    return np.where(t >= 0, up * decay, 0.0)


def speech_hand_motion(rng: np.random.Generator, fig: S.Figure, env: np.ndarray) -> np.ndarray:
    """Per-frame hands ``[n, 2, 21, 2]`` (hand 0 = person's left = image right) driven by ``env``."""
    n = len(env)
    onsets = speech_onsets(env)
    active = np.zeros(n)
    acc = 0.0
    for i in range(n):  # one-pole smoothing (~8 frames) of the loudness: "is talking"
        acc += (env[i] - acc) / 8.0
        active[i] = acc
    dominant = int(rng.integers(2))
    strokes = np.zeros((2, n, 2))
    close = np.zeros((2, n))
    for o in onsets:
        loud = float(env[o:o + 6].max()) if o < n else 0.0
        r = rng.random()
        hands = (0, 1) if r < 0.5 else ((dominant,) if r < 0.85 else (1 - dominant,))
        prof = stroke_profile(n, int(o))
        for h in hands:
            amp = rng.uniform(0.06, 0.10) * (0.6 + loud)
            ang = rng.normal(math.pi / 2, 0.5)  # image y grows downwards: pi/2 = a downward beat
            strokes[h] += prof[:, None] * amp * np.array([math.cos(ang), math.sin(ang)])
            close[h] += prof * rng.uniform(0.3, 0.6)
    out = np.zeros((n, 2, 21, 2))
    reach = 0.95 * (fig.arm_len[0] + fig.arm_len[1])
    for h in range(2):
        side = 1.0 if h == 0 else -1.0
        sh = np.array([fig.cx + side * fig.shoulder_hw, fig.shoulder_y])
        if h == 0:
            lo, hi = max(fig.cx + 0.06, 0.55), 0.94
        else:
            lo, hi = 0.06, min(fig.cx - 0.06, 0.45)
        rest_x = S._smooth_signal(rng, n, lo, hi, fmin=0.05, fmax=0.3)
        rest_y = S._smooth_signal(rng, n, 0.78, 0.92, fmin=0.05, fmax=0.3)
        xs = rest_x + side * 0.05 * active
        ys = rest_y - 0.22 * active
        ang = S._smooth_signal(rng, n, -0.6, 0.6, fmax=0.4) - side * 0.25
        curl = np.clip(S._smooth_signal(rng, n, 0.0, 0.4, fmax=0.5) + close[h], 0, 1)
        spread = S._smooth_signal(rng, n, -0.4, 0.8, fmax=0.5)
        for i in range(n):
            w = np.array([xs[i], ys[i]]) + strokes[h, i]
            d = w - sh
            L = float(np.linalg.norm(d))
            if L > reach:
                w = sh + d * (reach / L)
            k = S.hand_keypoints(w, ang[i], fig.hand_len, curl[i], spread[i], mirror=(h == 0))
            k += np.clip(S.HAND_MARGIN - k.min(0), 0, None) - np.clip(k.max(0) - (1 - S.HAND_MARGIN), 0, None)
            out[i, h] = k
    return out


def generate_clip(clip_id: str, seed: int, num_frames: int, size: int, speech: dict, heldout: bool) -> S.Clip:
    rng = np.random.default_rng(seed)
    fig = S.sample_figure(np.random.default_rng([seed, 11]))
    num_samples = int(round(num_frames * S.SAMPLE_RATE / S.FPS))
    audio, desc = S.make_clip_audio(rng, num_samples, speech, heldout, speech_prob=0.6)
    env = speech_envelope(audio, S.FPS, num_frames)
    hands = speech_hand_motion(rng, fig, env)
    scores = np.random.default_rng([seed, 7])
    bg = S.render_background(fig, size) if size else None
    frames, poses = [], []
    for i in range(num_frames):
        elbows = np.zeros((2, 2))
        for h in range(2):
            side = 1.0 if h == 0 else -1.0
            shp = (fig.cx + side * fig.shoulder_hw, fig.shoulder_y + 0.02)
            elbows[h] = S._elbow(shp, hands[i][h, 0], fig.arm_len[0], fig.arm_len[1], side)
        st = S.FrameState(hands=hands[i], elbows=elbows, mouth_open=float(env[i]))
        if size:
            frames.append(S.render_frame(fig, st, size, bg))
        poses.append(S.pose_frame(fig, st, i, scores))
    return S.Clip(clip_id, np.stack(frames) if size else np.zeros((0,)), poses, audio, env, fig, desc, heldout)


def write_keypoint_clip(root: Path, clip: S.Clip, seed_info: dict) -> None:
    """A clip without frames (``--size 0``): keypoints.npz, audio.wav and meta.json only - enough for
    train/gesture.py, not for the video trainer. meta.json says ``"frames": false``."""
    d = root / "clips" / clip.clip_id
    d.mkdir(parents=True, exist_ok=True)
    S.write_wav(d / "audio.wav", clip.audio)
    S._save_npz(d / "keypoints.npz", **S.clip_arrays(clip.poses))
    meta = {"num_frames": len(clip.poses), "fps": S.FPS, "width": 64, "height": 64, "kind": "halfbody",
            "content_box": [0.0, 0.0, 1.0, 1.0], "frames": False, "source": f"synthetic:{clip.clip_id}",
            "synthetic": {"generator": "train/gesture_synth.py", **seed_info, "heldout": clip.heldout,
                          "audio_source": clip.audio_source}}
    write_json_atomic(d / "meta.json", meta)


def generate(out_dir, clips: int = 144, frames: int = 120, size: int = 0, seed: int = 0, heldout_frac: float = 0.11,
             encoder: str | None = str(DEFAULT_ENCODER), progress: bool = False) -> dict:
    out = Path(out_dir)
    if (out / "dataset.json").exists():
        raise FileExistsError(f"{out} already holds a dataset; choose an empty folder")
    speech = S.load_speech_sources(S.default_media_dir())
    held = S.split_clips(clips, seed, heldout_frac)
    enc = None
    if encoder:
        from echomimic_core.audio import load_audio_encoder

        enc = load_audio_encoder(encoder)
    names = {False: [], True: []}
    for i in range(clips):
        cid = f"gest_{i:04d}"
        cseed = int(np.random.default_rng([seed, 5, i]).integers(2 ** 31))
        clip = generate_clip(cid, cseed, frames, size, speech, held[i])
        root = out / "heldout" if held[i] else out
        info = {"clip_seed": cseed, "figure_seed": cseed, "motion": "speech"}
        (S.write_clip if size else write_keypoint_clip)(root, clip, info)
        d = root / "clips" / cid
        if enc is not None:
            feats = compute_audio_features(d / "audio.wav", enc, S.FPS, frames)
            np.save(d / "audio_features.npy", feats)
            (d / "audio_features.json").write_text(json.dumps({"encoder": str(encoder), "tokens": int(feats.shape[1])}))
        names[held[i]].append(cid)
        if progress:
            print(f"[{i + 1}/{clips}] {cid} {'heldout' if held[i] else 'train'} {clip.audio_source}", file=sys.stderr)
    settings = {"seed": seed, "clips": clips, "frames": frames, "size": size, "motion": "speech",
                "encoder": str(encoder or "")}
    for is_held, root in ((False, out), (True, out / "heldout")):
        if names[is_held]:
            write_json_atomic(root / "dataset.json", {"format": S.FORMAT, "fps": S.FPS, "sample_rate": S.SAMPLE_RATE,
                                                      "clips": names[is_held], "gesture_synthetic": settings})
    return {"train": names[False], "heldout": names[True]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--clips", type=int, default=144)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--size", type=int, default=0, help="frame side in pixels; 0 = keypoints and audio only (default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout", type=float, default=0.11)
    ap.add_argument("--encoder", default=str(DEFAULT_ENCODER), help="whisper tiny.pt for audio_features.npy ('' = none)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    r = generate(a.out_dir, a.clips, a.frames, a.size, a.seed, a.heldout, a.encoder or None, progress=not a.quiet)
    print(json.dumps({"out": a.out_dir, "train_clips": len(r["train"]), "heldout_clips": len(r["heldout"])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
