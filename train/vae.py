"""Pretrain a small diffusers ``AutoencoderKL`` on dataset frames (CPU, minutes).

The result is a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) that can
stand in for ``sd-vae-ft-mse/`` in the official model-folder layout: 3 -> 4 latent channels, 4 blocks
(3 downsamplings, scale factor 8), like SD's VAE but with tiny widths.

Loss: L1 + MSE on pixels in [-1, 1], weighted up inside the mouth and hand boxes (``regions.npz``
or boxes from ``keypoints.npz``; small details that carry the demo's whole signal), plus a small KL
term. The decoder reconstructs a posterior *sample* during training, as in SD's VAE.

After training the script measures, on held-out frames when available (else on training frames):
the reconstruction error of encode(mean) -> decode; the per-channel mean/std of the posterior means
are measured on (a subsample of) the TRAINING frames, the latents the diffusion model will see. The official pipeline (and this repo's pipeline and trainer) hard-code the latent scale
0.18215 instead of reading ``vae.config.scaling_factor``, so by default the measured per-channel
normalisation is FOLDED INTO THE WEIGHTS (``quant_conv`` scales/centres the latents,
``post_quant_conv`` undoes it; decoded images are unchanged): afterwards ``0.18215 * latent`` has
mean ~0 and std ~1 per channel and config.json keeps ``scaling_factor: 0.18215``. With
``--no-fold`` the raw latents are kept and ``scaling_factor = 1 / std`` is written instead (then every
consumer must read it from the config).

    python train/vae.py DATA [DATA2 ...] --out OUT/sd-vae-ft-mse [--steps 1500] [--max-minutes 10]
                        [--eval-data DATA/heldout] [--init VAE_DIR] [--no-fold] [--fp16]

What worked for the 64x64 demo (about 22 min of one nice'd CPU thread in total): train on many
figures rather than many frames (e.g. ``synthetic.py D1 --clips 640 --frames 6 --seed 100`` plus a
normal ``--clips 64 --frames 48`` set), default blocks (16,16,32,32), batch 8, 4000 steps at lr 2e-3,
then 3000 steps at 5e-4 (``--init``); the colour augmentation is what makes unseen figures' colours
come out right (held-out L1 25 -> 11 /255). Fewer distinct figures (56) overfit their palettes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

if __package__ in (None, ""):  # `python train/vae.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from echomimic_core.errors import ConfigError  # noqa: E402
from echomimic_core.models.configs import LATENT_SCALE as OFFICIAL_SCALE  # noqa: E402

DEFAULT_BLOCKS = (16, 16, 32, 32)


def vae_config(block_out_channels=DEFAULT_BLOCKS, sample_size: int = 64, norm_num_groups: int | None = None,
               layers_per_block: int = 1) -> dict:
    """A tiny SD-style AutoencoderKL config (4 latent channels, len(blocks)-1 downsamplings)."""
    blocks = tuple(int(c) for c in block_out_channels)
    groups = norm_num_groups or math.gcd(*blocks, 8)
    return {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "down_block_types": ["DownEncoderBlock2D"] * len(blocks),
        "up_block_types": ["UpDecoderBlock2D"] * len(blocks),
        "block_out_channels": list(blocks), "layers_per_block": int(layers_per_block),
        "act_fn": "silu", "norm_num_groups": int(groups), "sample_size": int(sample_size),
        "scaling_factor": OFFICIAL_SCALE, "force_upcast": True, "mid_block_add_attention": True,
    }


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

def _clip_dirs(root: Path) -> list[Path]:
    index = root / "dataset.json"
    if index.is_file():
        return [root / "clips" / c for c in json.loads(index.read_text())["clips"]]
    return sorted(p for p in (root / "clips").iterdir() if (p / "meta.json").is_file())


def _focus_boxes(clip: Path, n: int) -> list[np.ndarray]:
    """Per frame, the normalised [x0, y0, x1, y1] boxes to weight up (lips + both hands)."""
    reg = clip / "regions.npz"
    if reg.is_file():
        with np.load(reg, allow_pickle=False) as z:
            lips, hands = z["lips"], z["hands"]
        return [np.concatenate([lips[i][None], hands[i]], 0) for i in range(n)]
    kp = clip / "keypoints.npz"
    if kp.is_file():
        with np.load(kp, allow_pickle=False) as z:
            faces, hands = z["faces"], z["hands"]
        out = []
        for i in range(n):
            boxes = []
            for pts in (faces[i, 48:68], hands[i, 0], hands[i, 1]):
                pts = pts[(pts > 0).all(-1)]
                if len(pts):
                    lo, hi = pts.min(0), pts.max(0)
                    c, h = (lo + hi) / 2, (hi - lo) / 2 * 1.5 + 0.02
                    boxes.append(np.concatenate([c - h, c + h]))
            out.append(np.array(boxes).reshape(-1, 4))
        return out
    return [np.zeros((0, 4))] * n


def load_frames(root: str | os.PathLike, size: int | None = None, max_frames: int | None = None,
                stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """All frames (every ``stride``-th) of a dataset: uint8 [N, S, S, 3] RGB and a float32 [N, S, S]
    focus mask (1 inside the lips/hand boxes)."""
    root = Path(root)
    frames, masks = [], []
    for clip in _clip_dirs(root):
        files = sorted((clip / "frames").iterdir())
        boxes = _focus_boxes(clip, len(files))
        for i in range(0, len(files), stride):
            img = cv2.cvtColor(cv2.imread(str(files[i]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            if size and img.shape[:2] != (size, size):
                img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            h, w = img.shape[:2]
            m = np.zeros((h, w), np.float32)
            for b in boxes[i]:
                x0, y0 = max(int(b[0] * w), 0), max(int(b[1] * h), 0)
                x1, y1 = min(int(math.ceil(b[2] * w)), w), min(int(math.ceil(b[3] * h)), h)
                m[y0:y1, x0:x1] = 1.0
            frames.append(img)
            masks.append(m)
            if max_frames and len(frames) >= max_frames:
                return np.stack(frames), np.stack(masks)
    if not frames:
        raise FileNotFoundError(f"no frames found under {root}/clips/*/frames")
    return np.stack(frames), np.stack(masks)


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# --------------------------------------------------------------------------------------------
# training / evaluation
# --------------------------------------------------------------------------------------------

def train_vae(frames: np.ndarray, masks: np.ndarray | None = None, *, config: dict | None = None,
              steps: int = 1500, batch: int = 16, lr: float = 1e-3, kl_weight: float = 1e-6,
              focus: float = 4.0, seed: int = 0, max_seconds: float | None = None, log_every: int = 50,
              vae=None, log=print, color_aug: bool = True):
    """Train (or continue training ``vae``) and return ``(vae, history)``; history rows are dicts
    ``{step, loss, l1, mse, kl, seconds}``. Augmentation: horizontal flips, and with ``color_aug`` a
    random RGB channel permutation per sample (the figures' colours are random, so the VAE must not
    learn a fixed palette)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    if vae is None:
        vae = AutoencoderKL(**(config or vae_config(sample_size=frames.shape[1])))
    vae.train()
    x_all = _to_tensor(frames)
    w_all = torch.ones(x_all.shape[0], 1, *x_all.shape[2:]) if masks is None else \
        (1.0 + focus * torch.from_numpy(masks)[:, None])
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, min(50, steps // 10))

    def lr_at(s, elapsed):
        if s < warm:
            return (s + 1) / warm
        p = (s - warm) / max(1, steps - warm)
        if max_seconds:  # anneal by the time budget when it comes first
            p = max(p, elapsed / max_seconds)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))

    gen = torch.Generator().manual_seed(seed)
    history, t0 = [], time.time()  # (the LR schedule follows steps, or the time budget when shorter)
    acc = {"loss": 0.0, "l1": 0.0, "mse": 0.0, "kl": 0.0, "n": 0}
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * lr_at(step, time.time() - t0)
        idx = torch.randint(0, x_all.shape[0], (batch,), generator=gen)
        x, w = x_all[idx], w_all[idx]
        flip = torch.rand(batch, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        w = torch.where(flip[:, None, None, None], w.flip(-1), w)
        if color_aug:  # random RGB channel order: colour combinations never seen together
            perm = torch.stack([torch.randperm(3, generator=gen) for _ in range(batch)])
            x = torch.gather(x, 1, perm[:, :, None, None].expand_as(x))
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        y = vae.decode(z).sample
        err = y - x
        l1 = (w * err.abs()).mean()
        mse = (w * err.pow(2)).mean()
        kl = post.kl().mean()  # summed over the latent elements, mean over the batch
        loss = l1 + mse + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        for k, v in (("loss", loss), ("l1", l1), ("mse", mse), ("kl", kl)):
            acc[k] += float(v.detach())
        acc["n"] += 1
        last = step == steps - 1
        out_of_time = max_seconds is not None and time.time() - t0 > max_seconds
        if (step + 1) % log_every == 0 or last or out_of_time:
            row = {"step": step + 1, **{k: acc[k] / acc["n"] for k in ("loss", "l1", "mse", "kl")},
                   "seconds": round(time.time() - t0, 1)}
            history.append(row)
            if log:
                log(f"step {row['step']:5d}  loss {row['loss']:.4f}  l1 {row['l1']:.4f}  mse {row['mse']:.5f}  "
                    f"kl {row['kl']:.3f}  {row['seconds']:.0f}s")
            acc = {"loss": 0.0, "l1": 0.0, "mse": 0.0, "kl": 0.0, "n": 0}
        if out_of_time:
            if log:
                log(f"time budget reached after {step + 1} steps")
            break
    vae.eval()
    return vae, history


@torch.no_grad()
def evaluate_vae(vae, frames: np.ndarray, masks: np.ndarray | None = None, batch: int = 32) -> dict:
    """Reconstruction error (encode posterior mean -> decode, uint8 round trip) and latent statistics."""
    vae.eval()
    lat, recon = [], []
    for s in range(0, len(frames), batch):
        x = _to_tensor(frames[s:s + batch])
        z = vae.encode(x).latent_dist.mean
        y = vae.decode(z).sample.clamp(-1, 1)
        lat.append(z)
        recon.append(((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    z = torch.cat(lat)
    rec = np.concatenate(recon).astype(np.float64)
    ref = frames.astype(np.float64)
    abs_err = np.abs(rec - ref).mean(-1)
    mse = float(((rec - ref) ** 2).mean())
    out = {
        "frames": int(len(frames)),
        "l1_uint8": float(abs_err.mean()),
        "psnr_db": float(10 * math.log10(255.0 ** 2 / max(mse, 1e-12))),
        "latent_std": float(z.std()),
        "latent_mean": float(z.mean()),
        "latent_channel_std": [float(v) for v in z.std(dim=(0, 2, 3))],
        "latent_channel_mean": [float(v) for v in z.mean(dim=(0, 2, 3))],
    }
    if masks is not None and masks.sum() > 0:
        out["l1_uint8_focus"] = float((abs_err * masks).sum() / masks.sum())
    return out




@torch.no_grad()
def fold_latent_normalisation(vae, mean, std, target_scale: float = OFFICIAL_SCALE) -> None:
    """Re-parametrise ``vae`` in place so that ``target_scale * latent`` has per-channel mean 0 and
    std 1 where the current posterior means have per-channel ``mean``/``std``; the decoded images do
    not change (the inverse affine map is folded into ``post_quant_conv``).

    With this, a VAE trained from scratch works with code that hard-codes 0.18215 (the official
    pipeline) and its config keeps ``scaling_factor = 0.18215``.
    """
    mean = torch.as_tensor(mean, dtype=torch.float64)
    std = torch.as_tensor(std, dtype=torch.float64)
    c = mean.numel()
    k = 1.0 / (std * target_scale)          # new = k * (old - mean)
    qc, pqc = vae.quant_conv, vae.post_quant_conv
    if qc is None or pqc is None:
        raise ConfigError("folding needs use_quant_conv and use_post_quant_conv")
    w, b = qc.weight.double(), qc.bias.double()
    w[:c] *= k.view(-1, 1, 1, 1)
    b[:c] = (b[:c] - mean) * k
    b[c:] += 2.0 * torch.log(k)             # the posterior std scales with the mean
    qc.weight.copy_(w.to(qc.weight.dtype)); qc.bias.copy_(b.to(qc.bias.dtype))
    # decoder: old = new / k + mean  ->  W old + b = (W / k) new + (W mean + b)
    w2, b2 = pqc.weight.double(), pqc.bias.double()
    b2 = b2 + (w2[:, :, 0, 0] @ mean)
    w2 = w2 / k.view(1, -1, 1, 1)
    pqc.weight.copy_(w2.to(pqc.weight.dtype)); pqc.bias.copy_(b2.to(pqc.bias.dtype))


def save_vae(vae, out_dir: str | os.PathLike, scaling_factor: float, fp16: bool = False, log: dict | None = None):
    """Write the diffusers folder; ``scaling_factor`` goes into config.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vae.register_to_config(scaling_factor=float(scaling_factor))
    to_save = vae.half() if fp16 else vae
    to_save.save_pretrained(str(out), safe_serialization=True)
    if fp16:
        vae.float()
    if log is not None:
        (out / "vae_train_log.json").write_text(json.dumps(log, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Pretrain a tiny AutoencoderKL on dataset frames (CPU).")
    ap.add_argument("data", nargs="+", help="dataset root(s) (train/README.md format, e.g. from train/synthetic.py)")
    ap.add_argument("--out", required=True, help="output diffusers folder (e.g. MODEL/sd-vae-ft-mse)")
    ap.add_argument("--eval-data", help="held-out dataset root (default: DATA/heldout when it exists)")
    ap.add_argument("--size", type=int, help="train resolution (default: the frames' size)")
    ap.add_argument("--blocks", default=",".join(map(str, DEFAULT_BLOCKS)), help="block_out_channels")
    ap.add_argument("--steps", type=int, default=1500, help="0 with --init: only re-measure, fold and save")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl", type=float, default=1e-6, help="weight of the KL term (KL summed over latent elements) against the per-pixel mean L1 + MSE")
    ap.add_argument("--focus", type=float, default=4.0, help="extra loss weight inside the lips/hand boxes")
    ap.add_argument("--max-minutes", type=float, default=15.0, help="stop training after this wall time")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fp16", action="store_true", help="store the weights as float16")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--stats-frames", type=int, default=4096,
                    help="about this many training frames measure the latent mean/std (for folding / scaling_factor)")
    ap.add_argument("--no-fold", action="store_true",
                    help="keep the raw latents and write scaling_factor = 1/std (default: fold a per-channel "
                         "normalisation into quant_conv/post_quant_conv so the hard-coded 0.18215 gives unit std)")
    ap.add_argument("--init", help="continue from this diffusers VAE folder")
    ap.add_argument("--no-color-aug", action="store_true", help="disable the channel-permutation augmentation")
    args = ap.parse_args(argv)

    torch.set_num_threads(max(1, args.threads))
    roots = [Path(d) for d in args.data]
    t_load = time.time()
    parts = [load_frames(r, args.size) for r in roots]
    frames = np.concatenate([p[0] for p in parts])
    masks = np.concatenate([p[1] for p in parts])
    data = roots[0]
    eval_root = Path(args.eval_data) if args.eval_data else (data / "heldout" if (data / "heldout" / "clips").is_dir() else None)
    if eval_root is not None:
        ev_frames, ev_masks = load_frames(eval_root, frames.shape[1])
    else:
        ev_frames, ev_masks = frames[::7], masks[::7]
    print(f"{len(frames)} training frames {frames.shape[1]}x{frames.shape[2]}, {len(ev_frames)} eval frames "
          f"({'held-out' if eval_root else 'training subset'}), loaded in {time.time() - t_load:.1f}s", file=sys.stderr)

    from echomimic_core.checkpoints import load_vae

    blocks = tuple(int(c) for c in args.blocks.split(","))
    vae = load_vae(Path(args.init)).float() if args.init else None  # local files only, never a hub id
    config = vae_config(blocks, sample_size=frames.shape[1])
    t0 = time.time()
    vae, history = train_vae(frames, masks, config=config, steps=args.steps, batch=args.batch, lr=args.lr,
                             kl_weight=args.kl, focus=args.focus, seed=args.seed,
                             max_seconds=args.max_minutes * 60, vae=vae, log_every=args.log_every,
                             color_aug=not args.no_color_aug,
                             log=lambda s: print(s, file=sys.stderr, flush=True))
    train_seconds = time.time() - t0
    # latent statistics from the TRAINING frames (what the diffusion model will be trained on)
    stat_frames = frames[:: max(1, len(frames) // args.stats_frames)]
    raw = evaluate_vae(vae, stat_frames)
    if args.no_fold:
        scaling = float(f"{1.0 / raw['latent_std']:.5g}")
    else:
        fold_latent_normalisation(vae, raw["latent_channel_mean"], raw["latent_channel_std"])
        scaling = OFFICIAL_SCALE
    metrics = evaluate_vae(vae, ev_frames, ev_masks)
    metrics["train_stats_before_fold"] = {k: raw[k] for k in ("frames", "latent_std", "latent_mean",
                                                              "latent_channel_std", "latent_channel_mean")}
    metrics["scaled_latent_std"] = metrics["latent_std"] * scaling
    metrics["scaled_latent_channel_std"] = [v * scaling for v in metrics["latent_channel_std"]]
    metrics["scaled_latent_channel_mean"] = [v * scaling for v in metrics["latent_channel_mean"]]
    params = sum(p.numel() for p in vae.parameters())
    log = {"args": vars(args), "train_frames": int(len(frames)), "train_seconds": round(train_seconds, 1),
           "steps_done": history[-1]["step"] if history else 0, "params": int(params),
           "eval": metrics, "eval_source": str(eval_root) if eval_root else "training subset",
           "scaling_factor": scaling, "history": history,
           "note": "the official pipeline hard-codes 0.18215: by default the latent normalisation is folded into "
                   "the weights so that 0.18215 is right; with --no-fold use config.json's scaling_factor everywhere"}
    out = save_vae(vae, args.out, scaling, args.fp16, log)
    raw_std = raw["latent_std"]
    print(json.dumps({"out": str(out), "params": params, "train_seconds": round(train_seconds, 1),
                      "steps": log["steps_done"], "scaling_factor": scaling, "raw_latent_std": raw_std,
                      **{k: metrics[k] for k in ("l1_uint8", "l1_uint8_focus", "psnr_db", "latent_std", "scaled_latent_std")
                         if k in metrics}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
