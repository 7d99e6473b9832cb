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
import colorsys
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python train/synthetic.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

# the dataset format's constants and its byte-deterministic writers (one place: train/dataset_format.py)
from train.dataset_format import FORMAT, FPS, SAMPLE_RATE, save_npz as _save_npz, write_wav  # noqa: E402,F401
from train.dataset_format import read_wav as _read_wav  # noqa: E402
SUPERSAMPLE = 4
HAND_MARGIN = 0.02  # every hand keypoint stays in [margin, 1 - margin]
GLOVE_SEP = 160.0  # min RGB distance between the glove colour and every other colour of the figure
FULL_CANVAS = [768, 768, 0, 768, 0, 768]
GENERATOR_VERSION = 1

# Envelope -> mouth mapping: windowed RMS in dBFS, -48 dB (and below) -> 0, -15 dB (and above) -> 1.
ENV_FLOOR_DB = -48.0
ENV_CEIL_DB = -15.0
ENV_WINDOW_S = 2.0 / FPS  # RMS window (centred on the frame time)

# Speech files in shared/media/audio: training clips use TRAIN_SPEECH, held-out clips HELDOUT_SPEECH
# (a voice/accent the training clips never hear).
TRAIN_SPEECH = ("speech_en_8s_16k_mono.wav", "speech_en_3s_16k_mono.wav", "echomimicv2_demo_good_zh.wav")
HELDOUT_SPEECH = ("speech_en_gb_5s_16k_mono.wav",)

HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11),
              (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))
PALM_POINTS = (0, 1, 5, 9, 13, 17)

# 21-point right-hand template (palm facing the camera, fingers up, thumb towards the body midline
# which is +x for the person's right hand at the image's left). Unit: wrist -> middle fingertip.
_HAND_TEMPLATE = np.array([
    (0.00, 0.00),
    (0.13, -0.10), (0.23, -0.20), (0.31, -0.30), (0.37, -0.40),      # thumb
    (0.12, -0.45), (0.14, -0.62), (0.15, -0.75), (0.16, -0.87),      # index
    (0.00, -0.47), (0.00, -0.66), (0.00, -0.82), (0.00, -1.00),      # middle
    (-0.11, -0.45), (-0.12, -0.62), (-0.13, -0.76), (-0.14, -0.88),  # ring
    (-0.20, -0.40), (-0.23, -0.52), (-0.25, -0.62), (-0.27, -0.72),  # little
], dtype=np.float64)


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
# figure
# --------------------------------------------------------------------------------------------

def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0


def _dist(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, float) - np.asarray(b, float)))


def _pick(rng, sampler, constraints=(), tries=300):
    """Rejection-sample a colour whose RGB distance to each ``(colour, min_distance)`` of ``constraints``
    is at least that distance; after ``tries`` failures the candidate with the largest worst-case
    margin is used."""
    best, best_margin = None, -1e9
    for _ in range(tries):
        c = sampler()
        margin = min((_dist(c, a) - d for a, d in constraints), default=0.0)
        if margin >= 0:
            return np.round(c)
        if margin > best_margin:
            best, best_margin = c, margin
    return np.round(best)


@dataclass
class Figure:
    """Appearance and static geometry of one figure (normalised coordinates, x right, y down)."""

    bg_kind: str
    bg_colors: list
    bg_param: float
    skin: np.ndarray
    torso_color: np.ndarray
    sleeve_color: np.ndarray
    hair_color: np.ndarray
    hair_kind: str
    lip_color: np.ndarray
    mouth_color: np.ndarray
    eye_color: np.ndarray
    glove_color: np.ndarray
    torso_kind: str
    cx: float
    head_c: tuple
    head_r: tuple
    shoulder_y: float
    shoulder_hw: float
    bottom_hw: float
    neck_hw: float
    arm_len: tuple
    arm_w: float
    hand_len: float
    mouth_c: tuple
    mouth_hw: float
    mouth_max_open: float
    lip_t: float
    eye_r: float
    blobs: list = field(default_factory=list)

    def colours(self) -> dict:
        return {k: [int(v) for v in getattr(self, k)] for k in
                ("skin", "torso_color", "sleeve_color", "hair_color", "lip_color", "mouth_color", "eye_color",
                 "glove_color")}


def sample_figure(rng: np.random.Generator) -> Figure:
    """A random figure. Colours are chosen so the glove (hands) and the mouth interior are far (RGB
    distance) from every other colour in the frame, which keeps the frame-based metrics unambiguous."""
    mouth = _pick(rng, lambda: _hsv(rng.uniform(-0.03, 0.03), rng.uniform(0.5, 0.9), rng.uniform(0.12, 0.2)))
    skin = _pick(rng, lambda: _hsv(rng.uniform(0.02, 0.11), rng.uniform(0.2, 0.6), rng.uniform(0.6, 0.98)),
                 [(mouth, 150)])
    lip = _pick(rng, lambda: _hsv(rng.uniform(-0.04, 0.03), rng.uniform(0.45, 0.75), rng.uniform(0.5, 0.75)),
                [(mouth, 80)])
    glove = _pick(rng, lambda: _hsv(rng.uniform(0, 1), rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0)),
                  [(mouth, GLOVE_SEP), (skin, GLOVE_SEP), (lip, GLOVE_SEP)])
    eye = _pick(rng, lambda: _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.6), rng.uniform(0.08, 0.3)),
                [(mouth, 60), (glove, GLOVE_SEP)])

    def clothing():
        return _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.8), rng.uniform(0.3, 0.9))

    torso = _pick(rng, clothing, [(glove, GLOVE_SEP), (skin, 100)])
    sleeve_factor = rng.uniform(0.65, 0.85) if rng.random() < 0.5 else rng.uniform(1.15, 1.3)
    sleeve = np.clip(torso * sleeve_factor, 0, 255)
    if _dist(sleeve, glove) < GLOVE_SEP:
        sleeve = torso.copy()
    hair = _pick(rng, lambda: _hsv(rng.uniform(0, 0.15), rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.7)),
                 [(glove, GLOVE_SEP), (skin, 90)])
    bg_kind = str(rng.choice(["solid", "gradient", "stripes", "blobs"]))
    n_bg = 1 if bg_kind == "solid" else 2
    bg_colors = [_pick(rng, lambda: _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.6), rng.uniform(0.35, 0.95)),
                       [(glove, GLOVE_SEP), (skin, 100), (torso, 100)]) for _ in range(n_bg)]
    blobs = []
    if bg_kind == "blobs":
        for _ in range(int(rng.integers(3, 7))):
            blobs.append((float(rng.uniform(0, 1)), float(rng.uniform(0, 0.6)), float(rng.uniform(0.05, 0.2)),
                          float(rng.uniform(0.05, 0.2)), float(rng.uniform(0, 180))))

    cx = 0.5 + rng.uniform(-0.04, 0.04)
    rx = rng.uniform(0.11, 0.14)
    ry = rx * rng.uniform(1.05, 1.28)
    hy = rng.uniform(0.2, 0.26)
    shoulder_y = hy + ry + rng.uniform(0.06, 0.09)
    shoulder_hw = rng.uniform(0.2, 0.26)
    mouth_hw = rx * rng.uniform(0.4, 0.55)
    return Figure(
        bg_kind=bg_kind, bg_colors=bg_colors, bg_param=float(rng.uniform(0, 1)),
        skin=skin, torso_color=torso, sleeve_color=sleeve, hair_color=hair,
        hair_kind=str(rng.choice(["none", "cap", "cap", "tuft"])),
        lip_color=lip, mouth_color=mouth, eye_color=eye, glove_color=glove,
        torso_kind=str(rng.choice(["trapezoid", "rounded", "ellipse"])),
        cx=cx, head_c=(cx, hy), head_r=(rx, ry), shoulder_y=shoulder_y, shoulder_hw=shoulder_hw,
        bottom_hw=shoulder_hw * rng.uniform(0.8, 1.05), neck_hw=rx * rng.uniform(0.35, 0.5),
        arm_len=(rng.uniform(0.2, 0.25), rng.uniform(0.2, 0.24)), arm_w=rng.uniform(0.05, 0.07),
        hand_len=rng.uniform(0.15, 0.19),
        mouth_c=(cx, hy + ry * rng.uniform(0.45, 0.55)), mouth_hw=mouth_hw,
        mouth_max_open=ry * rng.uniform(0.32, 0.42), lip_t=ry * rng.uniform(0.05, 0.08),
        eye_r=rx * rng.uniform(0.1, 0.14), blobs=blobs,
    )


# --------------------------------------------------------------------------------------------
# motion
# --------------------------------------------------------------------------------------------

def _smooth_signal(rng, n, lo, hi, fmin=0.15, fmax=1.0, fps=FPS):
    """A smooth random signal in [lo, hi]: a sum of three sinusoids at random (slow) frequencies."""
    t = np.arange(n) / fps
    s = np.zeros(n)
    for _ in range(3):
        s += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(fmin, fmax) * t + rng.uniform(0, 2 * np.pi))
    s = s / 1.6  # roughly [-1, 1], clipped
    s = np.clip(s, -1, 1)
    return lo + (hi - lo) * (s + 1) / 2


def hand_keypoints(wrist, angle, length, curl, spread, mirror: bool) -> np.ndarray:
    """21 hand keypoints (normalised) for a wrist position, rotation (rad, 0 = fingers up), hand length,
    finger curl in [0, 1] and spread in [-1, 1]. ``mirror`` flips the template for the person's left hand."""
    p = _HAND_TEMPLATE.copy()
    p[:, 0] *= 1.0 + 0.3 * spread
    for f in range(5):
        base = 4 * f + 1
        for j in range(base + 1, base + 4):
            p[j] = p[base] + (p[j] - p[base]) * (1.0 - 0.55 * curl)
    if mirror:
        p[:, 0] = -p[:, 0]
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return np.asarray(wrist)[None] + length * p @ rot.T


def _elbow(shoulder, wrist, a, b, outward: float) -> np.ndarray:
    """Two-link IK: elbow position for segment lengths a, b; picks the solution on the ``outward``
    side (sign of x offset) and below the shoulder-wrist line when possible."""
    s, w = np.asarray(shoulder, float), np.asarray(wrist, float)
    d = w - s
    L = float(np.linalg.norm(d))
    if L < 1e-9:
        return s + np.array([0.0, a])
    if L >= a + b:
        return s + d * (a / (a + b))
    x = (a * a - b * b + L * L) / (2 * L)
    h = math.sqrt(max(a * a - x * x, 0.0))
    u = d / L
    n = np.array([-u[1], u[0]])
    e1, e2 = s + x * u + h * n, s + x * u - h * n
    score1 = 0.5 * outward * (e1[0] - s[0]) + e1[1]
    score2 = 0.5 * outward * (e2[0] - s[0]) + e2[1]
    return e1 if score1 >= score2 else e2


@dataclass
class FrameState:
    hands: np.ndarray        # [2, 21, 2] hand 0 = person's left (image right), 1 = right (image left)
    elbows: np.ndarray       # [2, 2] same order as hands
    mouth_open: float        # [0, 1]


def hand_motion(rng: np.random.Generator, fig: Figure, n: int) -> list[np.ndarray]:
    """Per-frame [2, 21, 2] hand keypoints (hand 0 = person's left = image right)."""
    out = np.zeros((n, 2, 21, 2))
    reach = 0.95 * (fig.arm_len[0] + fig.arm_len[1])
    for h in range(2):
        side = 1.0 if h == 0 else -1.0  # image x direction of this hand from the midline
        sh = np.array([fig.cx + side * fig.shoulder_hw, fig.shoulder_y])
        if h == 0:
            xs = _smooth_signal(rng, n, max(fig.cx + 0.06, 0.55), 0.94, fmin=0.3, fmax=1.3)
        else:
            xs = _smooth_signal(rng, n, 0.06, min(fig.cx - 0.06, 0.45), fmin=0.3, fmax=1.3)
        ys = _smooth_signal(rng, n, 0.5, 0.94, fmin=0.3, fmax=1.3)
        ang = _smooth_signal(rng, n, -0.9, 0.9, fmax=0.6) * 1.0
        ang = ang - side * 0.25  # lean fingers slightly outward
        curl = _smooth_signal(rng, n, 0.0, 0.8, fmax=0.8)
        spread = _smooth_signal(rng, n, -0.6, 1.0, fmax=0.8)
        for i in range(n):
            w = np.array([xs[i], ys[i]])
            d = w - sh
            L = float(np.linalg.norm(d))
            if L > reach:
                w = sh + d * (reach / L)
            k = hand_keypoints(w, ang[i], fig.hand_len, curl[i], spread[i], mirror=(h == 0))
            # keep the whole hand inside the frame (shift it, wrist included)
            k += np.clip(HAND_MARGIN - k.min(0), 0, None) - np.clip(k.max(0) - (1 - HAND_MARGIN), 0, None)
            out[i, h] = k
    return list(out)


# --------------------------------------------------------------------------------------------
# pose dicts
# --------------------------------------------------------------------------------------------

def face_landmarks(fig: Figure, mouth_open: float) -> np.ndarray:
    """iBUG-68 landmarks [68, 2] of the drawn face; 48-59 outer lip, 60-67 inner lip (the dark opening)."""
    hx, hy = fig.head_c
    rx, ry = fig.head_r
    pts = np.zeros((68, 2))
    phis = np.pi + 0.15 - np.arange(17) * (np.pi + 0.3) / 16
    pts[0:17] = np.stack([hx + rx * np.cos(phis), hy + ry * np.sin(phis)], 1)
    ey = hy - 0.12 * ry
    for k, side in enumerate((-1, 1)):  # image-left brow 17-21 / eye 36-41, then image-right
        ex = hx + side * 0.4 * rx
        bx = ex + np.linspace(-0.2, 0.2, 5) * rx
        pts[17 + 5 * k:22 + 5 * k] = np.stack([bx, ey - 0.3 * ry - 0.05 * ry * np.cos(np.linspace(-1.2, 1.2, 5))], 1)
        ang = np.array([np.pi, 4 * np.pi / 3, 5 * np.pi / 3, 0, np.pi / 3, 2 * np.pi / 3])
        pts[36 + 6 * k:42 + 6 * k] = np.stack([ex + 1.6 * fig.eye_r * np.cos(ang), ey + fig.eye_r * np.sin(ang)], 1)
    pts[27:31] = np.stack([np.full(4, hx), np.linspace(ey, hy + 0.3 * ry, 4)], 1)
    pts[31:36] = np.stack([hx + np.linspace(-0.15, 0.15, 5) * rx, np.full(5, hy + 0.33 * ry)], 1)
    mx, my = fig.mouth_c
    o_h = mouth_open * fig.mouth_max_open / 2  # inner half-height
    out_hw, out_hh = fig.mouth_hw, o_h + fig.lip_t
    in_hw = fig.mouth_hw * 0.82
    outer = np.pi + np.arange(12) * np.pi / 6  # 48 left corner, upper lip, 54 right corner, lower lip
    pts[48:60] = np.stack([mx + out_hw * np.cos(outer), my + out_hh * np.sin(outer)], 1)
    inner = np.pi + np.arange(8) * np.pi / 4
    pts[60:68] = np.stack([mx + in_hw * np.cos(inner), my + o_h * np.sin(inner)], 1)
    return pts


def pose_frame(fig: Figure, st: FrameState, num: int, scores: np.random.Generator) -> dict:
    """One frame in the official per-frame dict layout (float64, normalised coordinates)."""
    hx, hy = fig.head_c
    rx, ry = fig.head_r
    cand = -np.ones((18, 2))
    score = np.zeros(18)
    cand[0] = (hx, hy + 0.15 * ry)                                  # nose
    cand[1] = (fig.cx, fig.shoulder_y)                              # neck
    cand[2] = (fig.cx - fig.shoulder_hw, fig.shoulder_y)            # R shoulder (image left)
    cand[5] = (fig.cx + fig.shoulder_hw, fig.shoulder_y)            # L shoulder
    cand[3], cand[4] = st.elbows[1], st.hands[1, 0]                 # R elbow, wrist
    cand[6], cand[7] = st.elbows[0], st.hands[0, 0]                 # L elbow, wrist
    cand[8] = (fig.cx - 0.6 * fig.bottom_hw, 1.02)                  # hips: just below the frame
    cand[11] = (fig.cx + 0.6 * fig.bottom_hw, 1.02)
    cand[14] = (hx - 0.4 * rx, hy - 0.12 * ry)                      # R eye (image left)
    cand[15] = (hx + 0.4 * rx, hy - 0.12 * ry)
    cand[16] = (hx - rx, hy)                                        # R ear
    cand[17] = (hx + rx, hy)
    visible = [0, 1, 2, 3, 4, 5, 6, 7, 14, 15, 16, 17]
    score[visible] = scores.uniform(0.75, 0.98, len(visible))
    score[[8, 11]] = scores.uniform(0.1, 0.3, 2)
    outside = ((cand < 0) | (cand > 1)).any(1)
    score[outside & (score > 0.3)] = 0.2  # e.g. an elbow below the frame: low confidence, not drawn
    subset = np.where(score > 0.3, np.arange(18, dtype=np.float64), -1.0)[None]
    faces = face_landmarks(fig, st.mouth_open)[None]
    return {
        "bodies": {"candidate": cand, "subset": subset, "score": score[None]},
        "hands": st.hands.copy(),
        "hands_score": scores.uniform(0.85, 1.02, (2, 21)),
        "faces": faces,
        "faces_score": scores.uniform(0.8, 0.98, (1, 68)),
        "num": int(num),
        "draw_pose_params": list(FULL_CANVAS),
    }


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------

_SHIFT = 4
_ONE = 1 << _SHIFT


class _Canvas:
    """Supersampled drawing canvas; points are normalised, continuous-coordinate correct (the final
    pixel j covers [j, j+1) of x * size)."""

    def __init__(self, size: int):
        self.size = size
        self.n = size * SUPERSAMPLE
        self.img = np.zeros((self.n, self.n, 3), np.uint8)

    def p(self, xy) -> tuple[int, int]:
        x, y = xy
        return (int(round((x * self.n - 0.5) * _ONE)), int(round((y * self.n - 0.5) * _ONE)))

    def r(self, v: float) -> int:
        return max(int(round(v * self.n * _ONE)), 1)

    def ellipse(self, c, axes, color, angle=0.0, start=0, end=360, thickness=-1):
        cv2.ellipse(self.img, self.p(c), (self.r(axes[0]), self.r(axes[1])), angle, start, end,
                    _bgr(color), thickness, cv2.LINE_8, _SHIFT)

    def poly(self, pts, color):
        arr = np.array([self.p(q) for q in pts], np.int32)
        cv2.fillPoly(self.img, [arr], _bgr(color), cv2.LINE_8, _SHIFT)

    def line(self, a, b, color, width):
        w = max(int(round(width * self.n)), 1)
        cv2.line(self.img, self.p(a), self.p(b), _bgr(color), w, cv2.LINE_8, _SHIFT)
        for q in (a, b):
            self.ellipse(q, (width / 2, width / 2), color)

    def result(self) -> np.ndarray:
        small = cv2.resize(self.img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def _bgr(c) -> tuple[int, int, int]:
    c = np.clip(np.round(np.asarray(c, float)), 0, 255).astype(int)
    return int(c[2]), int(c[1]), int(c[0])


def render_background(fig: Figure, size: int) -> np.ndarray:
    """The static background as a supersampled BGR image."""
    n = size * SUPERSAMPLE
    c0 = np.asarray(fig.bg_colors[0], float)
    if fig.bg_kind == "solid":
        img = np.broadcast_to(c0, (n, n, 3)).copy()
    else:
        c1 = np.asarray(fig.bg_colors[1], float)
        yy, xx = np.mgrid[0:n, 0:n] / n
        ang = fig.bg_param * np.pi
        proj = np.cos(ang) * xx + np.sin(ang) * yy
        if fig.bg_kind == "gradient":
            t = (proj - proj.min()) / max(proj.max() - proj.min(), 1e-9)
        elif fig.bg_kind == "stripes":
            t = (np.sin(2 * np.pi * proj * (2 + 3 * fig.bg_param)) > 0).astype(float)
        else:
            t = np.zeros((n, n))
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    img = np.round(img[..., ::-1]).astype(np.uint8).copy()  # RGB -> BGR
    if fig.bg_kind == "blobs":
        cv = _Canvas(size)
        cv.img = img
        for (bx, by, ax, ay, a) in fig.blobs:
            cv.ellipse((bx, by), (ax, ay), fig.bg_colors[1], angle=a)
        img = cv.img
    return img


def render_frame(fig: Figure, st: FrameState, size: int, background: np.ndarray | None = None) -> np.ndarray:
    """Draw one frame: uint8 RGB [size, size, 3]."""
    cv = _Canvas(size)
    cv.img = (render_background(fig, size) if background is None else background).copy()
    cx, sy = fig.cx, fig.shoulder_y
    hx, hy = fig.head_c
    rx, ry = fig.head_r
    # torso
    shw, bhw = fig.shoulder_hw, fig.bottom_hw
    if fig.torso_kind == "trapezoid":
        cv.poly([(cx - shw, sy), (cx + shw, sy), (cx + bhw, 1.05), (cx - bhw, 1.05)], fig.torso_color)
        cv.ellipse((cx - shw, sy + 0.04), (0.04, 0.04), fig.torso_color)
        cv.ellipse((cx + shw, sy + 0.04), (0.04, 0.04), fig.torso_color)
    elif fig.torso_kind == "rounded":
        cv.poly([(cx - shw, sy + 0.05), (cx + shw, sy + 0.05), (cx + bhw, 1.05), (cx - bhw, 1.05)], fig.torso_color)
        cv.ellipse((cx, sy + 0.05), (shw, 0.06), fig.torso_color)
    else:
        cv.ellipse((cx, 1.05), (max(shw, bhw) * 1.05, 1.05 - sy), fig.torso_color)
    # neck and head
    cv.poly([(cx - fig.neck_hw, hy + 0.5 * ry), (cx + fig.neck_hw, hy + 0.5 * ry),
             (cx + fig.neck_hw, sy + 0.02), (cx - fig.neck_hw, sy + 0.02)], fig.skin)
    if fig.hair_kind == "tuft":
        cv.ellipse((hx, hy - 0.85 * ry), (0.5 * rx, 0.35 * ry), fig.hair_color)
    cv.ellipse((hx, hy), (rx, ry), fig.skin)
    if fig.hair_kind == "cap":
        cv.ellipse((hx, hy - 0.05 * ry), (rx * 1.04, ry * 1.02), fig.hair_color, start=180, end=360)
    ey = hy - 0.12 * ry
    for side in (-1, 1):
        cv.ellipse((hx + side * 0.4 * rx, ey), (1.4 * fig.eye_r, fig.eye_r), fig.eye_color)
    # mouth: lips ellipse, then the dark opening
    mx, my = fig.mouth_c
    o_h = st.mouth_open * fig.mouth_max_open / 2
    cv.ellipse((mx, my), (fig.mouth_hw, o_h + fig.lip_t), fig.lip_color)
    if o_h > 0:
        cv.ellipse((mx, my), (fig.mouth_hw * 0.82, o_h), fig.mouth_color)
    # arms then hands
    for h in range(2):
        side = 1.0 if h == 0 else -1.0
        sh = (cx + side * shw, sy + 0.02)
        el, wr = st.elbows[h], st.hands[h, 0]
        cv.line(sh, el, fig.sleeve_color, fig.arm_w)
        cv.line(el, wr, fig.sleeve_color, fig.arm_w * 0.85)
    for h in range(2):
        k = st.hands[h]
        hull = cv2.convexHull(np.array([cv.p(k[i]) for i in PALM_POINTS], np.int32))
        cv2.fillPoly(cv.img, [hull], _bgr(fig.glove_color), cv2.LINE_8, _SHIFT)
        fw = fig.hand_len * 0.17
        for base in (1, 5, 9, 13, 17):
            for j in range(base, base + 3):
                cv.line(k[j], k[j + 1], fig.glove_color, fw)
    return cv.result()


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
        raise ValueError(f"heldout_figures must be 'new' or 'shared', got {heldout_figures!r}")
    if heldout_figures == "shared" and identities <= 0:
        raise ValueError("heldout_figures='shared' needs identities > 0")
    if size % 8 or size < 32:
        raise ValueError(f"size must be a multiple of 8 and >= 32, got {size}")
    if frames < 1 or clips < 1:
        raise ValueError("need at least one clip of at least one frame")
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
