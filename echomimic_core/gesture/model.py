"""The audio -> hand/arm motion model: a small 1-D convolutional flow-matching network.

Why this architecture
---------------------
* **Input**: the whisper states the sampler already computes for the UNet (one chunk of
  ``10 x (n_layer+1)`` tokens per video frame). Only the frame's own two feature positions are kept
  (``[F, n_layer+1, 384]``), mixed over layers with learned softmax weights and normalised with
  statistics measured on the training set; a second audio encoder is never run.
* **Output**: per frame 44 arm points (two 21-point hands and both elbows) in *body coordinates*
  (:mod:`.motion`), predicted as a residual around the reference person's own arm pose (the anchor),
  so the result starts from, and stays around, how the reference holds their hands. The flow runs
  in the ``latent_dim`` whitened principal components of the training residuals (PCA, measured by
  the trainer): 88 coordinates of 44 strongly coupled points have far fewer degrees of freedom, and
  sampling in that subspace keeps hands hand-shaped (independent per-point noise would make fingers
  wobble and hands grow).
* **Generative, not regression**: gestures given speech are one-to-many (the same sentence can be
  said with either hand, larger or smaller). Plain regression averages those modes into a stiff
  mean. Rectified flow (flow matching on the straight noise -> data path) learns the distribution
  with a plain MSE loss, trains stably on a few minutes of CPU, and samples in a handful of Euler
  steps; the seed picks the noise, so one seed = one reproducible performance. The source noise is
  smoothed along time (:func:`smooth_noise`), so what a few-step sampler leaves of it is a slow
  drift, not per-frame jitter.
* **Network**: dilated residual 1-D convolutions over time (kernel 5, dilations 1,2,4,8,...),
  FiLM-conditioned on the anchor pose and the flow time. Convolutions are translation-equivariant
  and have a bounded receptive field (about 2.5 s with the default config), so any length is handled
  by running windows over one seeded noise sequence and cross-fading them (the overlap sees the same
  noise and audio, so neighbouring windows agree and the join is smooth). With ~0.2 M parameters a
  minute of speech takes seconds on one CPU thread (``bench/`` has no separate entry: the
  cost is negligible next to the video sampler).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..errors import CheckpointError, InputError
from .motion import MOTION_DIM

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "gesture_model.safetensors"
FORMAT = "echomimic-v2-gesture/1"
POSITIONS_PER_FRAME = 10
CENTRE = (4, 5)
"""Positions of a frame's chunk that belong to the frame itself (offsets 0 and +1 around ``int(i*50/fps)``)."""


def frame_audio(chunks: torch.Tensor, num_layers: int) -> torch.Tensor:
    """Per-frame chunks ``[F, 10*L, D]`` (``AudioFeatures.chunks``) -> the frame's own states ``[F, L, D]``."""
    c = torch.as_tensor(chunks)
    if c.ndim != 3 or c.shape[1] != POSITIONS_PER_FRAME * num_layers:
        raise InputError(
            f"audio features have shape {tuple(c.shape)}, but the gesture model was trained on whisper features with "
            f"{num_layers} states per position ({POSITIONS_PER_FRAME * num_layers} tokens per frame): use the audio "
            "encoder it was trained with, train one for yours with train/gesture.py, or use the pose library / still hands")
    c = rearrange(c.float(), "f (p l) d -> f p l d", p=POSITIONS_PER_FRAME)
    return c[:, list(CENTRE)].mean(1)


def smooth_noise(shape, generator: torch.Generator | None = None, sigma: float = 2.0) -> torch.Tensor:
    """Unit-variance Gaussian noise ``[b f c]`` correlated along time (white noise convolved with a
    Gaussian of ``sigma`` frames, kernel scaled to unit energy). The flow starts from this instead of
    white noise, so whatever noise a few-step sampler leaves in the result is smooth, not jitter."""
    b, f, c = shape
    r = int(math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.pow(2).sum().sqrt()
    white = torch.randn((b * c, 1, f + 2 * r), generator=generator)
    out = F.conv1d(white, k.view(1, 1, -1))
    return rearrange(out, "(b c) 1 f -> b f c", b=b)


class _Block(nn.Module):
    def __init__(self, hidden: int, kernel: int, dilation: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, hidden)
        self.conv = nn.Conv1d(hidden, hidden, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                              padding_mode="replicate")
        self.film = nn.Linear(hidden, 2 * hidden)
        self.proj = nn.Conv1d(hidden, hidden, 1)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:  # h [b c f], cond [b c]
        scale, shift = self.film(cond)[..., None].chunk(2, dim=1)
        y = self.conv(self.norm(h)) * (1 + scale) + shift
        return h + self.proj(F.gelu(y))


class GestureModel(nn.Module):
    """``v = model(x_t [b f 88], t [b], audio [b f L D], anchor [b 88])``: the flow velocity of the
    normalised residual motion. Buffers hold the normalisation statistics measured by the trainer."""

    def __init__(self, audio_layers: int = 2, audio_width: int = 384, hidden: int = 96,
                 dilations=(1, 2, 4, 8, 1, 2), kernel: int = 5, window: int = 96, overlap: int = 16,
                 steps: int = 10, noise_sigma: float = 2.0, latent_dim: int = 16, fps: float = 24.0,
                 audio_encoder: str = ""):
        super().__init__()
        self.config = {"format": FORMAT, "audio_layers": int(audio_layers), "audio_width": int(audio_width),
                       "hidden": int(hidden), "dilations": [int(d) for d in dilations], "kernel": int(kernel),
                       "window": int(window), "overlap": int(overlap), "steps": int(steps),
                       "noise_sigma": float(noise_sigma), "latent_dim": int(latent_dim), "fps": float(fps),
                       "audio_encoder": str(audio_encoder)}
        self.layer_logits = nn.Parameter(torch.zeros(audio_layers))
        self.audio_in = nn.Linear(audio_width, hidden)
        self.x_in = nn.Linear(latent_dim, hidden)
        self.anchor_in = nn.Sequential(nn.Linear(MOTION_DIM, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.t_in = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(_Block(hidden, kernel, d) for d in dilations)
        self.out = nn.Conv1d(hidden, latent_dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        for name, shape in (("feat_mean", (audio_layers, audio_width)), ("feat_std", (audio_layers, audio_width)),
                            ("motion_mean", (MOTION_DIM,)), ("basis", (latent_dim, MOTION_DIM)), ("latent_std", (latent_dim,)),
                            ("anchor_mean", (MOTION_DIM,)), ("anchor_std", (MOTION_DIM,))):
            self.register_buffer(name, torch.zeros(shape) if "mean" in name else torch.ones(shape))
        with torch.no_grad():
            self.basis.copy_(torch.eye(latent_dim, MOTION_DIM))

    # ---------------------------------------------------------------- residual <-> latent
    def encode_residual(self, r: torch.Tensor) -> torch.Tensor:
        """Residual motion ``[..., 88]`` -> whitened principal components ``[..., latent_dim]``."""
        return ((r - self.motion_mean) @ self.basis.T) / self.latent_std

    def decode_residual(self, z: torch.Tensor) -> torch.Tensor:
        return (z * self.latent_std) @ self.basis + self.motion_mean

    # ---------------------------------------------------------------- network
    def _time(self, t: torch.Tensor) -> torch.Tensor:
        half = self.config["hidden"] // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half)
        ang = t.float()[:, None] * 1000.0 * freqs[None]
        return self.t_in(torch.cat([ang.sin(), ang.cos()], dim=-1))

    def audio_embed(self, audio: torch.Tensor) -> torch.Tensor:
        """``[b f L D]`` raw per-frame states -> ``[b c f]``."""
        a = (audio - self.feat_mean) / self.feat_std
        a = torch.einsum("bfld,l->bfd", a, self.layer_logits.softmax(0))
        return rearrange(self.audio_in(a), "b f c -> b c f")

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, anchor: torch.Tensor,
                audio_h: torch.Tensor | None = None) -> torch.Tensor:
        a = self.audio_embed(audio) if audio_h is None else audio_h
        h = rearrange(self.x_in(x_t), "b f c -> b c f") + a
        cond = self._time(t) + self.anchor_in((anchor - self.anchor_mean) / self.anchor_std)
        for blk in self.blocks:
            h = blk(h, cond)
        return rearrange(self.out(h), "b c f -> b f c")

    def flow_loss(self, x1: torch.Tensor, audio: torch.Tensor, anchor: torch.Tensor, mask: torch.Tensor,
                  generator: torch.Generator | None = None, curvature: float = 0.0) -> torch.Tensor:
        """Rectified-flow loss on latent residual windows ``x1 [b f latent_dim]``; ``mask [b f 1]`` zeroes
        frames where the tracker missed a point.

        ``curvature`` adds that weight times the same squared error of the velocity's second difference
        along time. Its minimiser is unchanged (the conditional mean velocity), but frame-to-frame
        errors, which cost almost nothing in the plain loss (it is dominated by the irreducible noise
        term), now cost up to ``1 + 16 * curvature`` times more (12 Hz; 6 Hz: 1 + 4c, 3 Hz: 1 + 0.34c).
        Without it a model trained 8000 steps drifted into zig-zag (9-12 Hz) motion (held-out jitter 0.150,
        real 0.029); with 1.0: 0.050. (A 4th difference, sparing the 3-6 Hz strokes more, measured no better.)"""
        b = x1.shape[0]
        x0 = smooth_noise(x1.shape, generator, self.config["noise_sigma"])
        t = torch.rand(b, generator=generator)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
        e = self(xt, t, audio, anchor) - (x1 - x0)
        loss = (e ** 2 * mask).sum() / (mask.sum() * x1.shape[-1]).clamp(min=1)
        if curvature > 0 and e.shape[1] >= 3:
            m2 = mask[:, 2:] * mask[:, 1:-1] * mask[:, :-2]
            d2 = e[:, 2:] - 2 * e[:, 1:-1] + e[:, :-2]
            loss = loss + curvature * (d2 ** 2 * m2).sum() / (m2.sum() * x1.shape[-1]).clamp(min=1)
        return loss

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, audio: torch.Tensor, anchor: np.ndarray, seed: int = 0, amount: float = 1.0,
               steps: int | None = None, progress=None) -> np.ndarray:
        """Motion ``[F, 44, 2]`` in body coordinates for per-frame states ``audio [F, L, D]`` around
        ``anchor [44, 2]``. Windows of ``config.window`` frames overlap by ``config.overlap`` and are
        cross-faded with raised-cosine weights; all windows read one seeded noise sequence."""
        cfg = self.config
        n = int(audio.shape[0])
        if n < 1:
            raise InputError("no audio frames to generate gestures for")
        steps = int(steps or cfg["steps"])
        win, ov = cfg["window"], min(cfg["overlap"], cfg["window"] // 2)
        gen = torch.Generator().manual_seed(int(seed))
        noise = smooth_noise((1, n, cfg["latent_dim"]), gen, cfg["noise_sigma"])
        anc = torch.as_tensor(np.asarray(anchor, dtype=np.float32).reshape(1, MOTION_DIM))
        starts = [0] if n <= win else list(range(0, n - win, win - ov)) + [n - win]
        acc = torch.zeros(n, cfg["latent_dim"])
        wsum = torch.zeros(n, 1)
        for wi, s in enumerate(starts):
            e = min(s + win, n)
            a_h = self.audio_embed(torch.as_tensor(audio[s:e]).float()[None])
            x = noise[:, s:e].clone()
            for k in range(steps):
                t = torch.full((1,), k / steps)
                x = x + self(x, t, None, anc, audio_h=a_h) / steps
            w = torch.ones(e - s, 1)
            if ov > 0:
                ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(ov, dtype=torch.float32) + 0.5) / ov)
                if s > 0:
                    w[:ov, 0] = ramp
                if e < n:
                    w[-ov:, 0] = ramp.flip(0)
            acc[s:e] += w * x[0]
            wsum[s:e] += w
            if progress is not None:
                progress(wi + 1, len(starts))
        resid = self.decode_residual(acc / wsum)
        out = np.asarray(anchor, dtype=np.float64).reshape(1, MOTION_DIM) + float(amount) * resid.double().numpy()
        return out.reshape(n, -1, 2)

    # ---------------------------------------------------------------- files
    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        from ..checkpoints.state_dict import save_state_dict

        folder = Path(folder)
        save_state_dict(self.state_dict(), folder / WEIGHTS_NAME)
        (folder / CONFIG_NAME).write_text(json.dumps(dict(self.config, **(extra or {})), indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "GestureModel":
        from ..checkpoints.state_dict import read_state_dict

        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not cfg_path.is_file() or not w_path.is_file():
            raise CheckpointError(f"{folder} is not a gesture model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME}; "
                                  "train one with train/gesture.py)")
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("format") != FORMAT:
            raise CheckpointError(f"{cfg_path}: format {cfg.get('format')!r}, expected {FORMAT!r}")
        keys = ("audio_layers", "audio_width", "hidden", "dilations", "kernel", "window", "overlap", "steps", "noise_sigma",
                "latent_dim", "fps",
                "audio_encoder")
        model = cls(**{k: cfg[k] for k in keys if k in cfg})
        model.info = cfg
        try:
            model.load_state_dict(read_state_dict(w_path))
        except RuntimeError as exc:
            raise CheckpointError(f"{w_path} does not match its config.json: {exc}") from None
        return model.eval()
