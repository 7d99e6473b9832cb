"""Synthetic half-body "talking figure" dataset for the embedded demo model.

Every clip shows one procedurally drawn figure (background, torso, neck, head with eyes/hair, a mouth,
two arms and two gloved hands) at 24 fps:

* the **mouth opening follows the speech envelope** of the clip's audio (:func:`speech_envelope`:
  windowed RMS in dBFS mapped linearly to [0, 1]); the drawn mouth is an ellipse whose inner (dark)
  height is ``max_open * envelope``, and the iBUG-68 lip landmarks 48-67 describe exactly that ellipse;
* the **hands follow a smooth keypoint trajectory** (21-point hands, stored in the same per-frame pose
  layout as real data); the arms are solved from shoulder to wrist with two-link IK;
* the head, torso and background are static within a clip (the hands-only pose condition and the
  audio carry everything that moves).

Audio per clip is either a cut of the speech files in ``shared/media/audio`` (held-out clips use a
speech file never used for training clips) or a generated speech-like signal (harmonic tones with
gliding pitch and syllable envelopes, noise bursts, pauses). Everything is deterministic given the
seed; the same seed gives byte-identical files.

On disk the output is the trainer's dataset format (``echomimic-v2-train/1``, see ``train/README.md``)
plus, per clip, the official per-frame pose files ``pose/<k>.npy`` (pickled dicts exactly like the
demo sequences; ``draw_pose_params`` = full 768 canvas) so a clip can also drive the inference path::

    OUT/dataset.json                 training clips (format echomimic-v2-train/1) + generator settings
    OUT/clips/<id>/{meta.json, frames/000000.png…, audio.wav, keypoints.npz, regions.npz, pose/<k>.npy}
    OUT/heldout/dataset.json         held-out clips for evaluation, same format
    OUT/heldout/clips/<id>/…

CLI::

    python train/synthetic.py OUT_DIR --clips 64 --frames 48 --size 64 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python train/synthetic.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

# the dataset format's constants and its byte-deterministic writers (one place: train/dataset_format.py)
from echomimic_core.errors import ConfigError  # noqa: E402
from train.dataset_format import FORMAT, FPS, SAMPLE_RATE, save_npz as _save_npz, write_wav  # noqa: E402,F401
from train.dataset_format import read_wav as _read_wav  # noqa: E402
# the figure and its drawing live in train/synthetic_figure.py and train/synthetic_draw.py (re-exported here)
from train.synthetic_draw import SUPERSAMPLE, _Canvas, _bgr, render_background, render_frame  # noqa: E402,F401
from train.synthetic_figure import (FULL_CANVAS, GLOVE_SEP, HAND_EDGES, HAND_MARGIN, PALM_POINTS,  # noqa: E402,F401
                                    Figure, FrameState, _HAND_TEMPLATE, _dist, _elbow, _hsv, _pick,
                                    _smooth_signal, face_landmarks, hand_keypoints, hand_motion, pose_frame,
                                    sample_figure)

GENERATOR_VERSION = 1

# Envelope -> mouth mapping: windowed RMS in dBFS, -48 dB (and below) -> 0, -15 dB (and above) -> 1.
ENV_FLOOR_DB = -48.0
ENV_CEIL_DB = -15.0
ENV_WINDOW_S = 2.0 / FPS  # RMS window (centred on the frame time)

# Speech files in shared/media/audio: training clips use TRAIN_SPEECH, held-out clips HELDOUT_SPEECH
# (a voice/accent the training clips never hear).
TRAIN_SPEECH = ("speech_en_8s_16k_mono.wav", "speech_en_3s_16k_mono.wav", "echomimicv2_demo_good_zh.wav")
HELDOUT_SPEECH = ("speech_en_gb_5s_16k_mono.wav",)



# --------------------------------------------------------------------------------------------
# audio
# --------------------------------------------------------------------------------------------

def speech_envelope(wave_f32: np.ndarray, sample_rate: int = SAMPLE_RATE, fps: float = FPS,
                    num_frames: int | None = None) -> np.ndarray:
    """Per-video-frame speech envelope in [0, 1] (the quantity the synthetic mouth opening follows).

    For frame i (time i/fps) take the RMS of the samples in a window of ``ENV_WINDOW_S`` centred on
    it (zero outside the signal), convert to dBFS and map [-48, -15] dB linearly to [0, 1] (clipped).
    """
    x = np.asarray(wave_f32, dtype=np.float64).reshape(-1)
    if num_frames is None:
        num_frames = int(math.floor(len(x) / sample_rate * fps))
    half = int(round(ENV_WINDOW_S * sample_rate / 2))
    csum = np.concatenate([[0.0], np.cumsum(x * x)])
    out = np.zeros(num_frames, dtype=np.float64)
    for i in range(num_frames):
        c = int(round(i * sample_rate / fps))
        a, b = max(c - half, 0), min(c + half, len(x))
        energy = (csum[b] - csum[a]) / (2 * half) if b > a else 0.0
        db = 10.0 * math.log10(energy + 1e-12)
        out[i] = (db - ENV_FLOOR_DB) / (ENV_CEIL_DB - ENV_FLOOR_DB)
    return np.clip(out, 0.0, 1.0)


def decode_audio(path: str | os.PathLike) -> np.ndarray:
    """Decode any audio file to 16 kHz mono float32 in [-1, 1] (PyAV, same route as the library)."""
    import av

    parts = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            parts.extend(o.to_ndarray().reshape(-1) for o in resampler.resample(frame))
        parts.extend(o.to_ndarray().reshape(-1) for o in resampler.resample(None))
    if not parts:
        return np.zeros(0, np.float32)
    return (np.concatenate(parts).astype(np.float32) / 32768.0)


def default_media_dir() -> Path:
    repo = Path(__file__).resolve().parents[1]
    shared = Path(os.environ.get("ECHOMIMIC_SHARED_DIR", repo.parent / "shared"))
    return shared / "media" / "audio"


def load_speech_sources(media_dir: str | os.PathLike | None) -> dict[str, np.ndarray]:
    """The speech files that exist in ``media_dir`` (missing files are skipped)."""
    if media_dir is None:
        return {}
    media_dir = Path(media_dir)
    out = {}
    for name in TRAIN_SPEECH + HELDOUT_SPEECH:
        p = media_dir / name
        if p.is_file():
            out[name] = decode_audio(p)
    return out


def synth_speech_like(rng: np.random.Generator, num_samples: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A speech-like signal: syllables of harmonic tones (gliding f0, random formant weighting), some
    preceded by noise bursts, separated by gaps and occasional pauses. Returns float32, peak ~0.5."""
    t_total = num_samples / sr
    f0_base = rng.uniform(90, 260)
    y = np.zeros(num_samples, np.float64)
    t = rng.uniform(0.0, 0.25)
    while t < t_total:
        if rng.random() < 0.15:  # pause
            t += rng.uniform(0.25, 0.7)
            continue
        dur = rng.uniform(0.08, 0.32)
        a, b = int(t * sr), min(int((t + dur) * sr), num_samples)
        n = b - a
        if n <= 16:
            break
        tt = np.arange(n) / sr
        amp = rng.uniform(0.25, 1.0)
        # envelope: fast attack, slower decay
        u = tt / dur
        env = np.sin(np.pi * np.clip(u, 0, 1) ** rng.uniform(0.5, 0.9)) ** rng.uniform(1.0, 2.0)
        f0 = f0_base * rng.uniform(0.8, 1.25) * (1 + rng.uniform(-0.25, 0.25) * u)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        formants = rng.uniform([300, 900], [900, 2600])
        sig = np.zeros(n)
        for k in range(1, 40):
            fk = k * f0.mean()
            if fk > 4000:
                break
            w = (1.0 / k) * (1 + 2.5 * np.exp(-((fk - formants[0]) / 180) ** 2)
                             + 2.0 * np.exp(-((fk - formants[1]) / 300) ** 2))
            sig += w * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
        sig /= max(np.abs(sig).max(), 1e-9)
        y[a:b] += amp * env * sig
        if rng.random() < 0.35:  # fricative-like noise burst before the vowel
            nd = int(rng.uniform(0.03, 0.09) * sr)
            c0 = max(a - nd // 2, 0)
            noise = rng.standard_normal(nd)
            noise = np.diff(noise, prepend=0.0)  # high-pass
            benv = np.hanning(nd)
            seg = y[c0:c0 + nd]
            seg += 0.3 * amp * benv[:len(seg)] * noise[:len(seg)] / 2.0
        t += dur + rng.uniform(0.02, 0.15)
    peak = np.abs(y).max()
    if peak > 0:
        y *= 0.5 / peak
    return y.astype(np.float32)


def _normalise_level(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale so the loud part (90th percentile of 25 ms RMS) sits at -17 dBFS +- 3 dB, peak <= 0.95."""
    w = 400
    n = len(x) // w
    if n == 0:
        return x
    rms = np.sqrt((x[:n * w].reshape(n, w).astype(np.float64) ** 2).mean(1))
    active = rms[rms > 1e-4]
    if active.size == 0:
        return x
    level = np.percentile(active, 90)
    target = 10 ** ((-17.0 + rng.uniform(-3, 3)) / 20)
    g = target / max(level, 1e-9)
    g = min(g, 0.95 / max(np.abs(x).max(), 1e-9))
    return (x * g).astype(np.float32)


def make_clip_audio(rng: np.random.Generator, num_samples: int, speech: dict[str, np.ndarray],
                    heldout: bool, speech_prob: float = 0.5) -> tuple[np.ndarray, str]:
    """Audio for one clip and a description of its source."""
    names = [n for n in (HELDOUT_SPEECH if heldout else TRAIN_SPEECH) if n in speech]
    if names and rng.random() < speech_prob:
        name = names[int(rng.integers(len(names)))]
        src = speech[name]
        if len(src) >= num_samples:
            off = int(rng.integers(0, len(src) - num_samples + 1))
            x = src[off:off + num_samples].copy()
            desc = f"speech:{name}@{off / SAMPLE_RATE:.3f}s"
        else:
            pad = int(rng.integers(0, num_samples - len(src) + 1))
            x = np.zeros(num_samples, np.float32)
            x[pad:pad + len(src)] = src
            desc = f"speech:{name}+pad{pad / SAMPLE_RATE:.3f}s"
    else:
        x = synth_speech_like(rng, num_samples)
        desc = "synthetic"
    x = _normalise_level(x, rng)
    if rng.random() < 0.3:  # faint background noise
        x = x + (rng.standard_normal(num_samples) * 10 ** (rng.uniform(-60, -50) / 20)).astype(np.float32)
    return np.clip(x, -1.0, 1.0).astype(np.float32), desc


# --------------------------------------------------------------------------------------------
# clips
# --------------------------------------------------------------------------------------------

@dataclass
class Clip:
    clip_id: str
    frames: np.ndarray          # [F, S, S, 3] uint8 RGB
    poses: list                 # F official per-frame dicts
    audio: np.ndarray           # float32 16 kHz mono, F/fps seconds
    envelope: np.ndarray        # [F] the mouth opening that was drawn
    figure: Figure
    audio_source: str
    heldout: bool


def generate_clip(clip_id: str, seed: int, num_frames: int, size: int, speech: dict[str, np.ndarray],
                  heldout: bool, figure_seed: int | None = None) -> Clip:
    """One clip, fully determined by (seed, figure_seed, num_frames, size, heldout, speech sources)."""
    rng = np.random.default_rng(seed)
    frng = np.random.default_rng(seed if figure_seed is None else figure_seed)
    fig = sample_figure(frng)
    num_samples = int(round(num_frames * SAMPLE_RATE / FPS))
    audio, desc = make_clip_audio(rng, num_samples, speech, heldout)
    env = speech_envelope(audio, SAMPLE_RATE, FPS, num_frames)
    hands = hand_motion(rng, fig, num_frames)
    scores = np.random.default_rng([seed, 7])
    bg = render_background(fig, size)
    frames, poses = [], []
    for i in range(num_frames):
        elbows = np.zeros((2, 2))
        for h in range(2):
            side = 1.0 if h == 0 else -1.0
            sh = (fig.cx + side * fig.shoulder_hw, fig.shoulder_y + 0.02)
            elbows[h] = _elbow(sh, hands[i][h, 0], fig.arm_len[0], fig.arm_len[1], side)
        st = FrameState(hands=hands[i], elbows=elbows, mouth_open=float(env[i]))
        frames.append(render_frame(fig, st, size, bg))
        poses.append(pose_frame(fig, st, i, scores))
    return Clip(clip_id, np.stack(frames), poses, audio, env, fig, desc, heldout)


def split_clips(num_clips: int, seed: int, heldout_frac: float) -> list[bool]:
    """Which clip indices are held out: a seeded permutation, ``round(frac * n)`` clips (at least one
    when ``frac > 0`` and n >= 2)."""
    n_held = int(round(heldout_frac * num_clips))
    if heldout_frac > 0 and num_clips >= 2:
        n_held = max(n_held, 1)
    n_held = min(n_held, max(num_clips - 1, 0))
    perm = np.random.default_rng([seed, 1]).permutation(num_clips)
    held = np.zeros(num_clips, bool)
    held[perm[:n_held]] = True
    return held.tolist()


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------

def read_wav(path: str | os.PathLike) -> np.ndarray:
    """Read a 16-bit PCM mono wav as float32 (samples / 32768)."""
    return _read_wav(Path(path))[0]


def _box(pts: np.ndarray, dilate: float) -> np.ndarray:
    lo, hi = pts.min(0), pts.max(0)
    c, half = (lo + hi) / 2, (hi - lo) / 2 * dilate
    return np.concatenate([c - half, c + half])


def clip_arrays(poses: list) -> dict[str, np.ndarray]:
    """keypoints.npz arrays (trainer format) from per-frame dicts."""
    return {
        "bodies": np.stack([p["bodies"]["candidate"] for p in poses]).astype(np.float32),
        "bodies_score": np.stack([p["bodies"]["score"][0] for p in poses]).astype(np.float32),
        "hands": np.stack([p["hands"] for p in poses]).astype(np.float32),
        "hands_score": np.stack([p["hands_score"] for p in poses]).astype(np.float32),
        "faces": np.stack([p["faces"][0] for p in poses]).astype(np.float32),
        "faces_score": np.stack([p["faces_score"][0] for p in poses]).astype(np.float32),
    }


def region_arrays(poses: list, fig: Figure) -> dict[str, np.ndarray]:
    """regions.npz: lips box = box of the lip landmarks of the FULLY OPEN mouth dilated x1.5 (the same
    in every frame, so the lips partial-attention mask always covers the whole range the mouth can take,
    also in closed-mouth frames), head box (face points + head body points, x1.2), hand boxes."""
    lips_box = _box(face_landmarks(fig, 1.0)[48:68], 1.5)
    lips, head, hands = [], [], []
    for p in poses:
        f = p["faces"][0]
        lips.append(lips_box)
        c = p["bodies"]["candidate"]
        head.append(_box(np.concatenate([f, c[[0, 14, 15, 16, 17]]]), 1.2))
        hands.append(np.stack([_box(p["hands"][h], 1.0) for h in range(2)]))
    return {"lips": np.stack(lips).astype(np.float32), "head": np.stack(head).astype(np.float32),
            "hands": np.stack(hands).astype(np.float32)}


def write_clip(root: Path, clip: Clip, seed_info: dict) -> None:
    d = root / "clips" / clip.clip_id
    (d / "frames").mkdir(parents=True, exist_ok=True)
    (d / "pose").mkdir(exist_ok=True)
    num_frames, size = clip.frames.shape[0], clip.frames.shape[1]
    for i, fr in enumerate(clip.frames):
        cv2.imwrite(str(d / "frames" / f"{i:06d}.png"), cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
    for i, p in enumerate(clip.poses):
        np.save(d / "pose" / f"{i}.npy", p, allow_pickle=True)
    write_wav(d / "audio.wav", clip.audio)
    _save_npz(d / "keypoints.npz", **clip_arrays(clip.poses))
    _save_npz(d / "regions.npz", **region_arrays(clip.poses, clip.figure))
    fig = clip.figure
    meta = {
        "num_frames": int(num_frames), "fps": FPS, "width": int(size), "height": int(size),
        "kind": "halfbody", "content_box": [0.0, 0.0, 1.0, 1.0],
        "source": f"synthetic:{clip.clip_id}",
        "synthetic": {
            "generator_version": GENERATOR_VERSION, **seed_info,
            "heldout": clip.heldout, "audio_source": clip.audio_source,
            "colors": fig.colours(), "background": fig.bg_kind, "torso": fig.torso_kind, "hair": fig.hair_kind,
            "mouth_center": [float(v) for v in fig.mouth_c], "mouth_half_width": float(fig.mouth_hw),
            "mouth_max_open": float(fig.mouth_max_open), "hand_length": float(fig.hand_len),
            "envelope": [round(float(v), 6) for v in clip.envelope],
        },
    }
    (d / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def generate_dataset(out_dir: str | os.PathLike, clips: int = 64, frames: int = 48, size: int = 64,
                     seed: int = 0, heldout_frac: float = 0.125, identities: int = 0,
                     media_dir: str | os.PathLike | None = "default", progress: bool = False,
                     heldout_figures: str = "new") -> dict:
    """Write the dataset (see the module docstring). Returns a summary dict.

    ``identities`` > 0 reuses that many figure appearances across the training clips; 0 = a new figure
    for every clip. ``heldout_figures``: ``"new"`` (held-out clips get figures never seen in training:
    tests identity generalisation too) or ``"shared"`` (with ``identities`` > 0, held-out clips reuse the
    training figures with new audio and hand motion: tests audio/pose generalisation alone).
    """
    if heldout_figures not in ("new", "shared"):
        raise ConfigError(f"heldout_figures must be 'new' or 'shared', got {heldout_figures!r}")
    if heldout_figures == "shared" and identities <= 0:
        raise ConfigError("heldout_figures='shared' needs identities > 0")
    if size % 8 or size < 32:
        raise ConfigError(f"size must be a multiple of 8 and >= 32, got {size}")
    if frames < 1 or clips < 1:
        raise ConfigError("need at least one clip of at least one frame")
    out = Path(out_dir)
    if (out / "dataset.json").exists() or (out / "clips").exists():
        raise FileExistsError(f"{out} already holds a dataset; choose an empty folder")
    speech = load_speech_sources(default_media_dir() if media_dir == "default" else media_dir)
    held = split_clips(clips, seed, heldout_frac)
    names = {False: [], True: []}
    settings = {"seed": seed, "clips": clips, "frames": frames, "size": size, "heldout_frac": heldout_frac,
                "identities": identities, "heldout_figures": heldout_figures, "speech_sources": sorted(speech),
                "generator_version": GENERATOR_VERSION}
    for i in range(clips):
        clip_id = f"clip_{i:04d}"
        clip_seed = int(np.random.default_rng([seed, 2, i]).integers(2 ** 31))
        fseed = None
        if identities > 0 and (not held[i] or heldout_figures == "shared"):
            fseed = int(np.random.default_rng([seed, 3, i % identities]).integers(2 ** 31))
        clip = generate_clip(clip_id, clip_seed, frames, size, speech, held[i], fseed)
        root = out / "heldout" if held[i] else out
        write_clip(root, clip, {"clip_seed": clip_seed, "figure_seed": fseed if fseed is not None else clip_seed})
        names[held[i]].append(clip_id)
        if progress:
            print(f"[{i + 1}/{clips}] {clip_id} {'heldout' if held[i] else 'train'} {clip.audio_source}",
                  file=sys.stderr)
    for is_held, root in ((False, out), (True, out / "heldout")):
        if not names[is_held] and is_held:
            continue
        root.mkdir(parents=True, exist_ok=True)
        index = {"format": FORMAT, "fps": FPS, "sample_rate": SAMPLE_RATE, "clips": names[is_held],
                 "split": "heldout" if is_held else "train", "synthetic": settings}
        if not is_held:
            index["heldout"] = "heldout" if names[True] else None
        (root / "dataset.json").write_text(json.dumps(index, indent=1) + "\n")
    return {"train": names[False], "heldout": names[True], **settings}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--clips", type=int, default=64, help="number of clips (training + held-out)")
    ap.add_argument("--frames", type=int, default=48, help="frames per clip (24 fps)")
    ap.add_argument("--size", type=int, default=64, help="frame side in pixels (multiple of 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout", type=float, default=0.125, help="fraction of clips held out for evaluation")
    ap.add_argument("--identities", type=int, default=0,
                    help="distinct figures shared by the training clips (0 = one per clip)")
    ap.add_argument("--heldout-figures", choices=("new", "shared"), default="new",
                    help="held-out clips get unseen figures (new) or reuse the --identities figures (shared)")
    ap.add_argument("--media", default="default",
                    help="folder with the shared speech wavs (default: shared/media/audio; 'none' = generated audio only)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    media = None if args.media == "none" else args.media
    summary = generate_dataset(args.out_dir, args.clips, args.frames, args.size, args.seed, args.heldout,
                               args.identities, media, progress=not args.quiet,
                               heldout_figures=args.heldout_figures)
    print(json.dumps({"out": str(args.out_dir), "train_clips": len(summary["train"]),
                      "heldout_clips": len(summary["heldout"]), "speech_sources": summary["speech_sources"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
