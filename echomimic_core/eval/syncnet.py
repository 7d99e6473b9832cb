"""Sync-C / Sync-D (LSE-C / LSE-D) with SyncNet (Chung & Zisserman 2016; used through Wav2Lip, the
paper's [19]), following joonson/syncnet_python's ``SyncNetInstance.evaluate`` (own implementation).

Why by hand: the scorer is not on any package. Network ``S`` (``syncnet_v2.model`` is a plain state
dict of these names): ``netcnnaud`` (2-D convs over a ``[1, 13, 20]`` MFCC window) + ``netfcaud``,
``netcnnlip`` (3-D convs over 5 face frames ``[3, 5, 224, 224]``) + ``netfclip``; both end in 1024-d.

Protocol (syncnet_python):
  * video at 25 fps, face crops 224x224, **BGR, raw 0..255** values; audio 16 kHz mono int16 scale;
  * MFCC = python_speech_features defaults (25 ms frames every 10 ms, no window, 512-point FFT,
    26 mel filters, 13 cepstra, lifter 22, c0 replaced by the log frame energy), 100 per second;
  * video window i = frames i..i+4, audio window = MFCC frames 4i..4i+19;
  * distances of each video window to the audio windows shifted by -15..+15 (zero-padded), mean
    over windows -> ``mdist[31]``; **Sync-D = min(mdist)**, **Sync-C = median(mdist) - min(mdist)**,
    AV offset = 15 - argmin.
Face crops here come from the pose extractor's face points (box of the 68 points, centre and size
median-filtered over time, then syncnet_python's crop: 0.4 margin, box extended downwards), not
from its S3FD face tracker - close, but not pixel-identical, so figures can differ slightly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SYNC_FPS = 25.0
VSHIFT = 15
CROP_SCALE = 0.4


def _bn_relu2(c):
    return [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]


def _bn_relu3(c):
    return [nn.BatchNorm3d(c), nn.ReLU(inplace=True)]


class SyncNet(nn.Module):
    """syncnet_python's ``S`` (module indices match its Sequential layout). ``width`` scales channels (tests)."""

    def __init__(self, width: float = 1.0, embed: int = 1024):
        super().__init__()

        def w(c):
            return max(1, int(round(c * width)))

        a = [w(64), w(192), w(384), w(256), w(512)]
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, a[0], 3, 1, 1), *_bn_relu2(a[0]), nn.MaxPool2d(1, 1),
            nn.Conv2d(a[0], a[1], 3, 1, 1), *_bn_relu2(a[1]), nn.MaxPool2d(3, (1, 2)),
            nn.Conv2d(a[1], a[2], 3, padding=1), *_bn_relu2(a[2]),
            nn.Conv2d(a[2], a[3], 3, padding=1), *_bn_relu2(a[3]),
            nn.Conv2d(a[3], a[3], 3, padding=1), *_bn_relu2(a[3]), nn.MaxPool2d(3, 2),
            nn.Conv2d(a[3], a[4], (5, 4), padding=0), *_bn_relu2(a[4]))
        e = w(embed) if width != 1.0 else embed
        self.netfcaud = nn.Sequential(nn.Linear(a[4], a[4]), nn.BatchNorm1d(a[4]), nn.ReLU(), nn.Linear(a[4], e))
        v = [w(96), w(256), w(512)]
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, v[0], (5, 7, 7), (1, 2, 2), 0), *_bn_relu3(v[0]), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(v[0], v[1], (1, 5, 5), (1, 2, 2), (0, 1, 1)), *_bn_relu3(v[1]),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            nn.Conv3d(v[1], v[1], (1, 3, 3), padding=(0, 1, 1)), *_bn_relu3(v[1]),
            nn.Conv3d(v[1], v[1], (1, 3, 3), padding=(0, 1, 1)), *_bn_relu3(v[1]),
            nn.Conv3d(v[1], v[1], (1, 3, 3), padding=(0, 1, 1)), *_bn_relu3(v[1]),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(v[1], v[2], (1, 6, 6), padding=0), *_bn_relu3(v[2]))
        self.netfclip = nn.Sequential(nn.Linear(v[2], v[2]), nn.BatchNorm1d(v[2]), nn.ReLU(), nn.Linear(v[2], e))

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, 1, 13, 20]`` MFCC windows -> ``[n, e]``."""
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, 3, 5, 224, 224]`` BGR 0..255 -> ``[n, e]``."""
        return self.netfclip(self.netcnnlip(x).flatten(1))


# ------------------------------------------------------------------ audio features
def _hz2mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel2hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def mfcc(signal: np.ndarray, rate: int = 16000, winlen: float = 0.025, winstep: float = 0.01, numcep: int = 13,
         nfilt: int = 26, nfft: int = 512, preemph: float = 0.97, ceplifter: int = 22) -> np.ndarray:
    """MFCC ``[frames, numcep]`` with python_speech_features' default recipe (see the module docstring)."""
    from scipy.fft import dct

    x = np.asarray(signal, dtype=np.float64)
    x = np.append(x[:1], x[1:] - preemph * x[:-1])
    flen, fstep = int(round(winlen * rate)), int(round(winstep * rate))
    n = 1 if len(x) <= flen else 1 + int(math.ceil((len(x) - flen) / fstep))
    x = np.concatenate([x, np.zeros(max(0, (n - 1) * fstep + flen - len(x)))])
    idx = np.arange(flen)[None] + fstep * np.arange(n)[:, None]
    frames = x[idx]
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = pspec.sum(1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    mel = np.linspace(_hz2mel(0), _hz2mel(rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(mel) / rate).astype(int)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(bins[j], bins[j + 1]):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(bins[j + 1], bins[j + 2]):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    feat = pspec @ fb.T
    feat = np.log(np.where(feat == 0, np.finfo(float).eps, feat))
    feat = dct(feat, type=2, axis=1, norm="ortho")[:, :numcep]
    lift = 1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter)
    feat = feat * lift
    feat[:, 0] = np.log(energy)
    return feat


# ------------------------------------------------------------------ faces at 25 fps
def resample_indices(n: int, fps: float, target: float = SYNC_FPS) -> np.ndarray:
    """Source frame shown at each ``target``-fps instant (the last one whose time is <= k/target)."""
    count = int(math.floor(n / fps * target + 1e-6))
    return np.minimum(np.floor(np.arange(count) * fps / target + 1e-6).astype(int), n - 1)


def face_crops(frames: np.ndarray, faces: list, size: int = 224, smooth: int = 13) -> np.ndarray:
    """syncnet_python-style face crops ``[n, size, size, 3]`` (same channel order as ``frames``).

    ``faces``: per frame ``[68, 2]`` pixel points or None (filled from the nearest frame with a face).
    """
    import cv2
    from scipy.signal import medfilt

    have = [i for i, f in enumerate(faces) if f is not None]
    if not have:
        raise ValueError("no face found in any frame")
    boxes = np.zeros((len(faces), 3))  # centre x, centre y, half size
    for i in range(len(faces)):
        f = faces[i] if faces[i] is not None else faces[min(have, key=lambda j: abs(j - i))]
        lo, hi = f.min(0), f.max(0)
        boxes[i] = [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, max(hi - lo) / 2]
    k = min(smooth, len(faces) if len(faces) % 2 else len(faces) - 1)
    if k >= 3:
        boxes = np.stack([medfilt(boxes[:, j], k) for j in range(3)], 1)
    out = []
    for img, (mx, my, bs) in zip(frames, boxes):
        bsi = int(bs * (1 + 2 * CROP_SCALE))
        pad = np.pad(img, ((bsi, bsi), (bsi, bsi), (0, 0)), constant_values=110)
        my, mx = my + bsi, mx + bsi
        crop = pad[int(my - bs):int(my + bs * (1 + 2 * CROP_SCALE)), int(mx - bs * (1 + CROP_SCALE)):int(mx + bs * (1 + CROP_SCALE))]
        out.append(cv2.resize(crop, (size, size)))
    return np.stack(out)


# ------------------------------------------------------------------ scores
def sync_scores(video_emb: torch.Tensor, audio_emb: torch.Tensor, vshift: int = VSHIFT) -> dict:
    """``{"sync_d", "sync_c", "offset"}`` from per-window embeddings ``[N, e]`` (syncnet_python's calc_pdist)."""
    win = 2 * vshift + 1
    padded = F.pad(audio_emb, (0, 0, vshift, vshift))
    dists = torch.stack([F.pairwise_distance(video_emb[i:i + 1].expand(win, -1), padded[i:i + win])
                         for i in range(len(video_emb))], 1)
    mdist = dists.mean(1)
    minval, minidx = torch.min(mdist, 0)
    return {"sync_d": float(minval), "sync_c": float(torch.median(mdist) - minval), "offset": int(vshift - minidx)}


@torch.no_grad()
def evaluate_sync(net: SyncNet, crops_bgr: np.ndarray, audio_16k: np.ndarray, batch: int = 20,
                  device: str | torch.device = "cpu", vshift: int = VSHIFT) -> dict:
    """Sync-C/D of 25-fps face crops ``[n, 224, 224, 3]`` (BGR uint8) and 16 kHz audio (float, int16/32768)."""
    cc = mfcc(np.asarray(audio_16k, dtype=np.float64) * 32768.0, 16000).T  # [13, T]
    n = min(len(crops_bgr), int(math.floor(len(audio_16k) / 640)))
    last = n - 5
    if last < 1:
        raise ValueError(f"Sync-C/D need at least 6 frames at 25 fps with audio; got {n}")
    vid = torch.from_numpy(np.ascontiguousarray(crops_bgr[:n])).float().permute(3, 0, 1, 2)  # [3, n, H, W]
    aud = torch.from_numpy(cc).float()[None, None]  # [1, 1, 13, T]
    v_feats, a_feats = [], []
    for s in range(0, last, batch):
        idx = range(s, min(last, s + batch))
        v = torch.stack([vid[:, i:i + 5] for i in idx]).to(device)
        a = torch.cat([aud[:, :, :, 4 * i:4 * i + 20] for i in idx]).to(device)
        v_feats.append(net.forward_lip(v).float().cpu())
        a_feats.append(net.forward_aud(a).float().cpu())
    return sync_scores(torch.cat(v_feats), torch.cat(a_feats), vshift)
