"""Train and evaluate the audio -> gesture model (``echomimic_core.gesture.GestureModel``).

    python train/gesture.py CONFIG [--set train.steps=500 ...] [--eval-only MODEL_DIR] [--install]

CONFIG is a yaml file or a name in train/configs (``gesture_tiny``). Data: any dataset in the
training format (train/README.md) - ``keypoints.npz`` tracks plus the whisper windows
``audio_features.npy`` that ``train/preprocess.py --audio-encoder`` caches (or computed here once
with ``data.audio_encoder``). Frames are not read. Steps:

1. every clip -> arm motion in body coordinates ``[F, 44, 2]`` (per-frame neck origin and shoulder
   width) + the frame's own whisper states ``[F, L, 384]``; normalisation statistics measured on
   the training clips are stored in the model;
2. rectified-flow training on random windows, each with a random anchor frame of the same clip
   (the residual motion around it is the target);
3. held-out evaluation against two baselines (the anchor pose held still; a random training clip
   placed on the held-out body) - beat alignment, joint and motion-only FGD, jitter, diversity -
   written to ``OUTPUT_DIR/eval.json`` and printed as a table; ``--install`` copies the model into
   ``echomimic_core/assets/gesture_model``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import yaml  # noqa: E402

from echomimic_core.errors import InputError  # noqa: E402
from echomimic_core.gesture import DEFAULT_MODEL_DIR, GestureModel, frame_audio, speech_envelope, speech_onsets  # noqa: E402
from echomimic_core.gesture import metrics as M  # noqa: E402
from echomimic_core.gesture.motion import body_frame_arrays, points_from_arrays, to_motion  # noqa: E402
from train import data as D  # noqa: E402
from train.phases import deep_merge, parse_override, set_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = {
    "data": {"roots": [], "heldout": None, "audio_features": "auto", "audio_encoder": None, "cache_dir": None},
    "model": {"hidden": 64, "dilations": [1, 2, 4, 8], "kernel": 5, "window": 96, "overlap": 16, "steps": 10,
              "latent_dim": 16, "noise_sigma": 2.0},
    "train": {"steps": 3000, "batch": 32, "window": 48, "lr": 2e-3, "curvature": 0.0, "seed": 0, "max_minutes": 0,
              "threads": 1},
    "run": {"output_dir": "runs/gesture/model", "log_every": 200},
    "eval": {"seeds": [0, 1, 2]},
}


def load_config(name: str, overrides=()) -> dict:
    p = Path(name)
    if not p.is_file():
        p = REPO / "train" / "configs" / f"{name}.yaml"
    cfg = deep_merge(DEFAULTS, yaml.safe_load(p.read_text()) or {})
    for o in overrides:
        path, val = parse_override(o)
        set_path(cfg, path, val)
    return cfg


# ------------------------------------------------------------------------------------------------ data
class ClipData:
    """One clip: motion ``[F, 44, 2]``, its validity ``[F, 44]``, states ``[F, L, D]``, envelope, body layout."""

    def __init__(self, clip: D.Clip, features: np.ndarray, layers: int):
        kp = np.load(clip.path / "keypoints.npz")
        size = (clip.height, clip.width)
        origin, scale = body_frame_arrays(kp["bodies"], kp["bodies_score"], size)
        ok = np.isfinite(scale) & np.isfinite(origin).all(-1)
        if not ok.any():
            raise InputError(f"{clip.path}: no frame shows both shoulders")
        fill = int(np.argmax(ok))
        origin[~ok], scale[~ok] = origin[fill], scale[fill]
        pts, valid = points_from_arrays(kp["bodies"], kp["bodies_score"], kp["hands"], kp["hands_score"])
        self.motion = to_motion(pts, origin, scale, size).astype(np.float32)
        self.valid = valid & ok[:, None]
        self.motion[~self.valid] = 0.0
        self.audio = frame_audio(torch.from_numpy(np.asarray(features, dtype=np.float32)), layers).numpy()
        n = min(len(self.motion), len(self.audio))
        self.motion, self.valid, self.audio = self.motion[:n], self.valid[:n], self.audio[:n]
        wav, _ = D.read_wav(clip.path / "audio.wav")
        self.envelope = speech_envelope(wav, clip.fps, n)
        self.neck = origin[ok].mean(0) * [1, clip.height / clip.width]
        self.shoulder_width = float(np.median(scale[ok])) / clip.width
        self.clip = clip

    def __len__(self):
        return len(self.motion)


def load_clips(roots, cfg: dict, cache_name: str) -> list[ClipData]:
    clips = D.list_clips(roots)
    if not clips:
        raise SystemExit(f"no clips in {roots}")
    cache = Path(cfg["data"]["cache_dir"] or Path(cfg["run"]["output_dir"]) / "feature_cache") / cache_name
    enc = cfg["data"]["audio_encoder"]
    if enc and not Path(enc).exists() and (REPO / enc).exists():  # repo-relative paths in the shipped configs
        enc = str(REPO / enc)
    feats = D.ensure_audio_features(clips, cfg["data"]["audio_features"], cache, enc)
    tokens = int(feats(clips[0]).shape[1])
    return [ClipData(c, feats(c), tokens // 10) for c in clips]


def residual_pairs(clips: list[ClipData], rng: np.random.Generator, count: int) -> np.ndarray:
    out = []
    for _ in range(count):
        c = clips[int(rng.integers(len(clips)))]
        i, a = int(rng.integers(len(c))), int(rng.integers(len(c)))
        out.append((c.motion[i] - c.motion[a]).reshape(-1))
    return np.stack(out)


def fit_statistics(model: GestureModel, clips: list[ClipData], seed: int) -> None:
    allm = np.concatenate([c.motion.reshape(len(c), -1) for c in clips])
    alla = np.concatenate([c.audio for c in clips])
    res = residual_pairs(clips, np.random.default_rng([seed, 1]), 20000)
    with torch.no_grad():
        model.feat_mean.copy_(torch.from_numpy(alla.mean(0)))
        model.feat_std.copy_(torch.from_numpy(alla.std(0) + 1e-3))
        model.anchor_mean.copy_(torch.from_numpy(allm.mean(0)))
        model.anchor_std.copy_(torch.from_numpy(allm.std(0) + 1e-3))
        mean = res.mean(0)
        _, sv, vt = np.linalg.svd(res - mean, full_matrices=False)
        k = model.config["latent_dim"]
        model.motion_mean.copy_(torch.from_numpy(mean))
        model.basis.copy_(torch.from_numpy(vt[:k].copy()))
        model.latent_std.copy_(torch.from_numpy(sv[:k] / np.sqrt(len(res)) + 1e-4))
        explained = float((sv[:k] ** 2).sum() / (sv ** 2).sum())
    print(f"residual PCA: {k} components explain {100 * explained:.2f}% of the variance", file=sys.stderr)
    model.explained_variance = explained


def batch(clips: list[ClipData], model: GestureModel, rng: np.random.Generator, b: int, w: int):
    xs, auds, ancs, masks = [], [], [], []
    for _ in range(b):
        c = clips[int(rng.integers(len(clips)))]
        ww = min(w, len(c))
        s = int(rng.integers(len(c) - ww + 1))
        ok = np.flatnonzero(c.valid.all(1))
        a = int(ok[rng.integers(len(ok))]) if len(ok) else int(rng.integers(len(c)))
        r = (c.motion[s:s + ww] - c.motion[a]).reshape(ww, -1)
        xs.append(r)
        auds.append(c.audio[s:s + ww])
        ancs.append(c.motion[a].reshape(-1))
        masks.append((c.valid[s:s + ww] & c.valid[a]).all(1, keepdims=True))
    t = lambda v: torch.from_numpy(np.stack(v).astype(np.float32))  # noqa: E731
    with torch.no_grad():
        z = model.encode_residual(t(xs))
    return z, t(auds), t(ancs), t(masks)


def train(cfg: dict, clips: list[ClipData]) -> GestureModel:
    tc = cfg["train"]
    layers, width = clips[0].audio.shape[1:]
    torch.manual_seed(tc["seed"])  # before the model exists: its initial weights come from this generator
    model = GestureModel(audio_layers=layers, audio_width=width, fps=float(clips[0].clip.fps),
                         audio_encoder=str(cfg["data"]["audio_encoder"] or ""), **cfg["model"])
    fit_statistics(model, clips, tc["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=0.0)
    steps = int(tc["steps"])
    # cosine decay over the run's progress: the larger of the step fraction and (with max_minutes) the
    # time fraction, so a time-capped run still anneals to zero instead of stopping at a high rate
    budget = 60.0 * float(tc["max_minutes"] or 0)
    rng = np.random.default_rng([tc["seed"], 2])
    gen = torch.Generator().manual_seed(tc["seed"])
    t0, run = time.perf_counter(), 0.0
    model.train()
    for step in range(steps):
        elapsed = time.perf_counter() - t0
        progress = max(step / steps, elapsed / budget if budget else 0.0)
        if progress >= 1.0:
            print(f"stopping at step {step}: max_minutes {tc['max_minutes']} reached", file=sys.stderr)
            break
        for g in opt.param_groups:
            g["lr"] = tc["lr"] * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * progress))
        x, a, anc, mask = batch(clips, model, rng, tc["batch"], tc["window"])
        loss = model.flow_loss(x, a, anc, mask, gen, curvature=float(tc["curvature"]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run = 0.98 * run + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % cfg["run"]["log_every"] == 0 or step + 1 == steps:
            print(f"step {step + 1}/{steps} loss {run:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    else:
        step += 1
    model.info = dict(model.config, trained_steps=step, train_seconds=round(time.perf_counter() - t0, 1))
    model.explained_variance = getattr(model, "explained_variance", float("nan"))
    return model.eval()


# ------------------------------------------------------------------------------------------------ evaluation
def _fit(m: np.ndarray, n: int) -> np.ndarray:
    from echomimic_core.pose.length import fit_length_indices

    return m[fit_length_indices(len(m), n, "pingpong")]


def clip_seed(seed: int, index: int, count: int) -> int:
    """The sampling seed of held-out clip ``index`` (of ``count``) in evaluation draw ``seed``: distinct for
    every clip and draw. (One seed for every clip would give all clips of a draw the same noise, i.e. one
    shared random drift: the set's FGD would then measure a single sample, not the model's distribution.)"""
    return int(seed) * int(count) + int(index)


def _set_stats(ms, es):
    return (np.concatenate([M.window_stats(m, e) for m, e in zip(ms, es)]),
            np.concatenate([M.window_stats(m) for m in ms]))


def evaluate(model: GestureModel, heldout: list[ClipData], train_clips: list[ClipData], seeds=(0, 1, 2),
             baseline_seed: int = 0) -> dict:
    """Metrics of the model and the two baselines on held-out clips (reference = each clip's frame 0).

    Every stochastic method is drawn ``len(seeds)`` times: the model once per seed (clip ``i`` of draw
    ``s`` sampled with :func:`clip_seed`), the random-clip baseline with as many independent choices of
    training clips, and the "real" row - a floor: as many *training* clips (with their own speech) as
    held-out ones - with as many choices of clips. Beat alignment and jitter: mean over clips and draws.
    FGD (joint and motion-only): one distance per draw (one motion per held-out clip, against the
    held-out real motion, features standardised by the real set), reported as the mean over draws
    (``*_draws`` keeps each; a single draw of 16 clips varies by about +-2). Diversity: between the
    seeds' samples of the same clip. The still pose is deterministic (one draw)."""
    rng = np.random.default_rng(baseline_seed)
    real = [c.motion.astype(np.float64) for c in heldout]
    envs = [c.envelope for c in heldout]
    n = len(heldout)
    samples = [[model.sample(torch.from_numpy(c.audio), c.motion[0].astype(np.float64), seed=clip_seed(s, i, n))
                for s in seeds] for i, c in enumerate(heldout)]
    draws: dict[str, list] = {"real (training clips, own speech)": [], "model": [], "still (reference pose)": [],
                              "random training clip": []}
    for d in range(len(seeds)):
        floor = [train_clips[i] for i in rng.permutation(len(train_clips))[:n]]
        draws["real (training clips, own speech)"].append(([c.motion.astype(np.float64) for c in floor],
                                                           [c.envelope for c in floor]))
        draws["model"].append(([g[d] for g in samples], envs))
        draws["random training clip"].append(
            ([_fit(train_clips[int(rng.integers(len(train_clips)))].motion.astype(np.float64), len(m)) for m in real], envs))
    draws["still (reference pose)"].append(([np.repeat(m[:1], len(m), 0) for m in real], envs))
    real_joint, real_motion = _set_stats(real, envs)
    sj, sm = real_joint.std(0), real_motion.std(0)
    out = {}
    for name, sets in draws.items():
        pairs = [(m, e) for ms, es in sets for m, e in zip(ms, es)]
        fj, fm = [], []
        for ms, es in sets:
            joint, motion = _set_stats(ms, es)
            fj.append(M.frechet_distance(joint, real_joint, sj))
            fm.append(M.frechet_distance(motion, real_motion, sm))
        out[name] = {
            "beat_alignment": float(np.mean([M.beat_alignment(m, speech_onsets(e)) for m, e in pairs])),
            "fgd_joint": float(np.mean(fj)), "fgd_motion": float(np.mean(fm)),
            "fgd_joint_draws": fj, "fgd_motion_draws": fm,
            "jitter": float(np.mean([M.jitter(m) for m, _ in pairs])),
        }
    out["model"]["diversity"] = float(np.mean([M.diversity(g) for g in samples]))
    return out


def table(results: dict) -> str:
    lines = ["| method | beat alignment ↑ | FGD joint ↓ | FGD motion ↓ | jitter | diversity |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['beat_alignment']:.3f} | {r['fgd_joint']:.2f} | {r['fgd_motion']:.2f} | "
                     f"{r['jitter']:.4f} | {r.get('diversity', float('nan')):.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--eval-only", default=None, metavar="MODEL_DIR", help="evaluate a trained model, no training")
    ap.add_argument("--install", action="store_true", help="copy the model into echomimic_core/assets/gesture_model")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.set)
    torch.set_num_threads(max(1, int(cfg["train"]["threads"])))
    out = Path(cfg["run"]["output_dir"])
    train_clips = load_clips(cfg["data"]["roots"], cfg, "train")
    print(f"{len(train_clips)} training clips, {sum(len(c) for c in train_clips)} frames", file=sys.stderr)
    if args.eval_only:
        model = GestureModel.load(args.eval_only)
    else:
        model = train(cfg, train_clips)
        body = {"neck": [float(v) for v in np.mean([c.neck for c in train_clips], 0)],
                "shoulder_width": float(np.mean([c.shoulder_width for c in train_clips]))}
        model.save(out, extra={"trained_steps": model.info["trained_steps"], "train_seconds": model.info["train_seconds"],
                               "pca_explained_variance": round(model.explained_variance, 5),
                               "default_body": body, "train_config": cfg})
        model = GestureModel.load(out)
    if cfg["data"]["heldout"]:
        held = load_clips([cfg["data"]["heldout"]], cfg, "heldout")
        t0 = time.perf_counter()
        res = evaluate(model, held, train_clips, cfg["eval"]["seeds"])
        res["_meta"] = {"heldout_clips": len(held), "heldout_frames": sum(len(c) for c in held),
                        "eval_seconds": round(time.perf_counter() - t0, 1)}
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(res, indent=1) + "\n")
        print(table({k: v for k, v in res.items() if not k.startswith("_")}))
    if args.install:
        DEFAULT_MODEL_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "gesture_model.safetensors", "eval.json"):
            if (out / name).is_file():
                shutil.copyfile(out / name, DEFAULT_MODEL_DIR / name)
        print(f"installed into {DEFAULT_MODEL_DIR}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
