"""Demo-model quality on held-out synthetic clips (run by hand; prints a table).

Two numbers per clip, measured from the video frames alone (no pose detector):

* **mouth/audio correlation**: the mouth opening measured in the frames (soft count of pixels of the
  figure's mouth-interior colour inside the clip's lips box) against the clip audio's speech envelope
  (:func:`train.synthetic.speech_envelope`, the quantity the synthetic mouth follows). Pearson r.
  Target for the trained demo model: r >= 0.5.
* **hand error**: the centroid of the glove-coloured pixels of each hand (pixels are split between
  the two hands by the nearer driving hand point) against the driving keypoints' reference point
  (:func:`hand_reference_points`), in pixels and as a fraction of the image width. A hand with no
  glove pixels counts as an error of half the image width. Target: <= 10 % of the width.

Rows: the ground-truth frames (must score well: they validate the measurement), a "static reference"
floor (frame 0 repeated: what a model that ignores audio and pose gets), optionally the ground truth
passed through a VAE (the ceiling any latent model can reach), and with ``--model`` the model folder
(official layout, run by ``echomimic_core.pipeline`` from each clip's frame 0, audio.wav and pose/)
plus the same model with its reference UNet / denoiser / pose encoder re-initialised at random.

    python bench/demo_quality.py --data DATA/heldout [--vae VAE_DIR] [--model MODEL_DIR] [--max-clips N]
                                 [--steps N] [--guidance G]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from train.synthetic import FPS, SAMPLE_RATE, read_wav, speech_envelope  # noqa: E402

MOUTH_TOL = 60.0   # RGB distance at which a pixel stops counting as mouth interior
HAND_TOL = 110.0   # RGB distance at which a pixel stops counting as glove (the generator keeps >= 160)
HAND_REF_POINTS = tuple(range(21))
"""Hand keypoints whose mean is the hand's reference point (all 21; close to the drawn hand's
pixel centroid, see tests/test_synthetic_metrics.py)."""


# --------------------------------------------------------------------------------------------
# measurement functions (pure numpy; unit-tested on the ground-truth frames)
# --------------------------------------------------------------------------------------------

def _colour_weight(frames: np.ndarray, rgb, tol: float) -> np.ndarray:
    """Per-pixel membership in [0, 1]: 1 at the colour, falling linearly to 0 at RGB distance ``tol``."""
    d = np.linalg.norm(frames.astype(np.float32) - np.asarray(rgb, np.float32), axis=-1)
    return np.clip(1.0 - d / tol, 0.0, 1.0)


def box_to_pixels(box, height: int, width: int) -> tuple[int, int, int, int]:
    """Normalised [x0, y0, x1, y1] -> integer pixel slice bounds (x0, y0, x1, y1), at least 1 px."""
    x0 = int(math.floor(box[0] * width)); x1 = int(math.ceil(box[2] * width))
    y0 = int(math.floor(box[1] * height)); y1 = int(math.ceil(box[3] * height))
    x0, y0 = max(x0, 0), max(y0, 0)
    return x0, y0, max(min(x1, width), x0 + 1), max(min(y1, height), y0 + 1)


def mouth_box(faces: np.ndarray, dilate: float = 1.4) -> np.ndarray:
    """One normalised box covering the lips (face points 48-67) over all frames, dilated about its centre.
    ``faces``: [F, 68, 2]."""
    pts = np.asarray(faces)[:, 48:68].reshape(-1, 2)
    lo, hi = pts.min(0), pts.max(0)
    c, half = (lo + hi) / 2, (hi - lo) / 2 * dilate
    return np.concatenate([c - half, c + half])


def mouth_opening(frames: np.ndarray, box, mouth_rgb, tol: float = MOUTH_TOL) -> np.ndarray:
    """Mouth opening per frame: soft count of mouth-interior-coloured pixels inside ``box``.
    ``frames``: [F, H, W, 3] uint8 RGB. Returns [F] float (pixels)."""
    frames = np.asarray(frames)
    x0, y0, x1, y1 = box_to_pixels(box, frames.shape[1], frames.shape[2])
    w = _colour_weight(frames[:, y0:y1, x0:x1], mouth_rgb, tol)
    return w.reshape(len(frames), -1).sum(1)


def hand_reference_points(hands: np.ndarray) -> np.ndarray:
    """[F, 2, 21, 2] normalised hand keypoints -> [F, 2, 2] reference point per hand."""
    return np.asarray(hands)[:, :, list(HAND_REF_POINTS)].mean(2)


def hand_centroids(frames: np.ndarray, glove_rgb, guides: np.ndarray, tol: float = HAND_TOL,
                   min_mass: float = 1.0) -> np.ndarray:
    """Centroid (normalised x, y) of each hand's glove-coloured pixels, [F, 2, 2]; NaN for a hand with
    less than ``min_mass`` pixels. Pixels are assigned to the nearer of the two ``guides`` ([F, 2, 2]
    normalised, normally the driving reference points). Pixel j covers [j, j+1) of x * width."""
    frames = np.asarray(frames)
    f, h, w = frames.shape[:3]
    weight = _colour_weight(frames, glove_rgb, tol)
    xs = (np.arange(w) + 0.5) / w
    ys = (np.arange(h) + 0.5) / h
    gx, gy = np.meshgrid(xs, ys)
    out = np.full((f, 2, 2), np.nan)
    for i in range(f):
        g = np.asarray(guides[i])
        d0 = (gx - g[0, 0]) ** 2 + (gy - g[0, 1]) ** 2
        d1 = (gx - g[1, 0]) ** 2 + (gy - g[1, 1]) ** 2
        for k, mask in enumerate((d0 <= d1, d0 > d1)):
            m = weight[i] * mask
            mass = m.sum()
            if mass >= min_mass:
                out[i, k] = ((m * gx).sum() / mass, (m * gy).sum() / mass)
    return out


def hand_errors(centroids: np.ndarray, targets: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel distance per frame and hand ([F, 2]); a missing hand (NaN) counts as half the width."""
    d = (centroids - targets) * np.array([width, height])
    err = np.sqrt((d ** 2).sum(-1))
    return np.where(np.isnan(err), width / 2.0, err)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either series is constant."""
    a = np.asarray(a, np.float64); b = np.asarray(b, np.float64)
    a = a - a.mean(); b = b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-12 else 0.0


# --------------------------------------------------------------------------------------------
# clips
# --------------------------------------------------------------------------------------------

class ClipData:
    """A clip of the synthetic dataset (trainer format + the generator's ``synthetic`` meta block)."""

    def __init__(self, clip_dir: str | Path):
        self.dir = Path(clip_dir)
        self.meta = json.loads((self.dir / "meta.json").read_text())
        kp = np.load(self.dir / "keypoints.npz", allow_pickle=False)
        self.hands = kp["hands"].astype(np.float64)
        self.faces = kp["faces"].astype(np.float64)
        self.audio = read_wav(self.dir / "audio.wav")
        self.num_frames = int(self.meta["num_frames"])
        self.width, self.height = int(self.meta["width"]), int(self.meta["height"])
        colors = self.meta.get("synthetic", {}).get("colors")
        if not colors:
            raise ValueError(f"{self.dir}: meta.json has no synthetic.colors (not a synthetic clip?)")
        self.mouth_rgb = colors["mouth_color"]
        self.glove_rgb = colors["glove_color"]

    def frames(self) -> np.ndarray:
        files = sorted((self.dir / "frames").iterdir())
        return np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in files])

    def envelope(self, num_frames: int | None = None) -> np.ndarray:
        return speech_envelope(self.audio, SAMPLE_RATE, FPS, num_frames or self.num_frames)


def score_frames(frames: np.ndarray, clip: ClipData) -> dict:
    """Both metrics for ``frames`` ([F', H, W, 3] uint8, F' <= clip frames; resized to the clip size if
    needed) generated for ``clip``'s audio and hand keypoints."""
    frames = np.asarray(frames)
    if frames.shape[1:3] != (clip.height, clip.width):
        frames = np.stack([cv2.resize(f, (clip.width, clip.height), interpolation=cv2.INTER_AREA) for f in frames])
    n = len(frames)
    env = clip.envelope()[:n]
    mouth = mouth_opening(frames, mouth_box(clip.faces[:n]), clip.mouth_rgb)
    targets = hand_reference_points(clip.hands[:n])
    cents = hand_centroids(frames, clip.glove_rgb, targets)
    err = hand_errors(cents, targets, clip.width, clip.height)
    return {"mouth_corr": pearson(mouth, env), "hand_err_px": float(err.mean()),
            "hand_err_frac": float(err.mean() / clip.width), "hand_missing": float(np.isnan(cents[..., 0]).mean()),
            "frames": n}


def list_clips(data: str | Path) -> list[Path]:
    data = Path(data)
    index = data / "dataset.json"
    if index.is_file():
        names = json.loads(index.read_text())["clips"]
        return [data / "clips" / n for n in names]
    return sorted(p for p in (data / "clips").iterdir() if p.is_dir())


# --------------------------------------------------------------------------------------------
# frame sources (rows of the table)
# --------------------------------------------------------------------------------------------

def source_ground_truth(clip: ClipData) -> np.ndarray:
    return clip.frames()


def source_static(clip: ClipData) -> np.ndarray:
    fr = clip.frames()
    return np.repeat(fr[:1], len(fr), axis=0)


def make_vae_source(vae_dir: str | Path) -> Callable[[ClipData], np.ndarray]:
    """Ground truth encoded (posterior mean) and decoded by the VAE in ``vae_dir``."""
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(vae_dir)).eval().float()

    def run(clip: ClipData) -> np.ndarray:
        fr = clip.frames()
        x = torch.from_numpy(fr).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        outs = []
        with torch.no_grad():
            for chunk in x.split(16):
                z = vae.encode(chunk).latent_dist.mean
                outs.append(vae.decode(z).sample)
        y = torch.cat(outs).clamp(-1, 1)
        return ((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()

    return run


def reinitialise(module, seed: int) -> int:
    """Random-init every sub-module of ``module`` that has ``reset_parameters`` (seeded); returns how many
    were reset. Zero-initialised output layers become random too (an untrained baseline, not a fresh
    training start)."""
    import torch

    torch.manual_seed(seed)
    n = 0
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters") and callable(m.reset_parameters):
            m.reset_parameters()
            n += 1
    return n


def make_model_source(model_dir: str | Path, random_init: bool, steps: int | None, seed: int,
                      guidance_scale: float | None = None, context_frames: int = 12, context_overlap: int = 3,
                      threads: int | None = None, overrides: dict | None = None) -> Callable[[ClipData], np.ndarray]:
    """Frames generated by the EchoMimicV2 pipeline (``echomimic_core``) from the clip's frame 0 as the
    reference image, its ``audio.wav`` (whisper from the model folder) and its hand poses (``pose/``).
    ``random_init``: the same folder with the reference UNet, denoiser and pose encoder re-initialised
    at random (the VAE and whisper stay as loaded) - the untrained baseline. ``overrides``: more
    :class:`~echomimic_core.settings.GenerationSettings` fields (the fast options of a variant row), plus
    ``dtype`` (``bfloat16``, ``float16``; the weights' dtype, as ``generate --dtype``)."""
    import torch

    from echomimic_core.render import resolve_device

    from echomimic_core.audio import encode_audio, load_audio_encoder
    from echomimic_core.checkpoints import load_models
    from echomimic_core.pipeline import EchoMimicPipeline
    from echomimic_core.pose import load_pose_sequence

    if threads:
        torch.set_num_threads(threads)
    overrides = dict(overrides or {})
    _, dtype = resolve_device("cpu", overrides.pop("dtype", None))
    models = load_models(model_dir, dtype=dtype, device="cpu")
    if random_init:
        for k, net in enumerate((models.reference_unet, models.denoising_unet, models.pose_encoder)):
            reinitialise(net, seed + 1000 * (k + 1))
    pipe = EchoMimicPipeline.from_models(models)
    encoder = load_audio_encoder(models.audio_encoder_path)

    def run(clip: ClipData) -> np.ndarray:
        feats = encode_audio(encoder, str(clip.dir / "audio.wav"), fps=FPS).chunks
        poses = load_pose_sequence(clip.dir / "pose")
        ref = clip.frames()[0]
        with torch.no_grad():
            kwargs = dict(width=clip.width, height=clip.height, num_frames=clip.num_frames, steps=steps,
                          guidance_scale=guidance_scale, seed=seed, context_frames=context_frames,
                          context_overlap=context_overlap)
            res = pipe.generate(ref, feats, poses, **{**kwargs, **overrides})
        return (res.frames.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()

    return run


def evaluate(data: str | Path, sources: dict, max_clips: int | None = None) -> dict:
    clips = list_clips(data)[: max_clips or None]
    table = {}
    for name, fn in sources.items():
        rows, t0 = [], time.time()
        try:
            for cdir in clips:
                clip = ClipData(cdir)
                rows.append(score_frames(fn(clip), clip))
        except NotImplementedError as exc:
            table[name] = {"error": str(exc)}
            continue
        table[name] = {
            "mouth_corr": float(np.mean([r["mouth_corr"] for r in rows])),
            "hand_err_px": float(np.mean([r["hand_err_px"] for r in rows])),
            "hand_err_frac": float(np.mean([r["hand_err_frac"] for r in rows])),
            "hand_missing": float(np.mean([r["hand_missing"] for r in rows])),
            "clips": len(rows), "seconds": round(time.time() - t0, 2),
        }
    return table


def format_table(table: dict) -> str:
    lines = [f"{'source':<28} {'mouth r':>8} {'hand err px':>12} {'% width':>8} {'missing':>8} {'clips':>6}",
             "-" * 76]
    for name, r in table.items():
        if "error" in r:
            lines.append(f"{name:<28} n/a ({r['error']})")
        else:
            lines.append(f"{name:<28} {r['mouth_corr']:>8.3f} {r['hand_err_px']:>12.2f} "
                         f"{100 * r['hand_err_frac']:>7.1f}% {100 * r['hand_missing']:>7.1f}% {r['clips']:>6}")
    lines.append("targets for the trained demo model: mouth r >= 0.5, hand error <= 10% of the width")
    return "\n".join(lines)


def parse_variant(spec: str) -> tuple[str, dict]:
    """``"NAME=field:value,field:value"`` -> ``(NAME, {field: value})`` (ints, floats, else strings)."""
    name, _, body = spec.partition("=")
    overrides = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition(":")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        overrides[key.strip()] = value
    return name.strip(), overrides


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Demo-model quality on held-out synthetic clips")
    ap.add_argument("--data", required=True, help="held-out dataset folder (e.g. OUT/heldout)")
    ap.add_argument("--vae", help="diffusers AutoencoderKL folder: add a 'ground truth via VAE' row")
    ap.add_argument("--model", help="model folder (official layout): add trained and random-init rows")
    ap.add_argument("--steps", type=int, help="denoising steps (default: the pipeline preset)")
    ap.add_argument("--guidance", type=float, help="CFG scale (default: the pipeline preset)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-clips", type=int)
    ap.add_argument("--json", help="also write the table as JSON here")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=FIELD:VALUE[,FIELD:VALUE]",
                    help="another row of the trained model with GenerationSettings overrides, e.g. "
                         "'deep cache 2=deep_cache_interval:2', 'bf16=dtype:bfloat16' (repeatable)")
    ap.add_argument("--no-random", action="store_true", help="skip the random-init row")
    args = ap.parse_args(argv)
    sources = {"ground truth": source_ground_truth, "static reference (floor)": source_static}
    if args.vae:
        sources["ground truth via VAE"] = make_vae_source(args.vae)
    if args.model:
        sources["model (trained)"] = make_model_source(args.model, False, args.steps, args.seed, args.guidance)
        for spec in args.variant:
            name, overrides = parse_variant(spec)
            sources[f"model, {name}"] = make_model_source(args.model, False, args.steps, args.seed, args.guidance,
                                                          overrides=overrides)
        if not args.no_random:
            sources["model (random init)"] = make_model_source(args.model, True, args.steps, args.seed, args.guidance)
    table = evaluate(args.data, sources, args.max_clips)
    print(format_table(table))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
