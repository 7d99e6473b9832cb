"""Shared helpers of the eval tests: a constructed pose extractor and synthetic clips."""

from __future__ import annotations

import numpy as np

from echomimic_core.eval.backbones import random_backbone_for_tests

# A plausible iBUG-68 layout in a unit face box (x, y): jaw, brows, nose, eyes, lips.
_FACE = np.zeros((68, 2))
_FACE[0:17] = np.stack([0.05 + 0.9 * np.arange(17) / 16, 0.45 + 0.5 * np.sin(np.pi * np.arange(17) / 16)], 1)
_FACE[17:27] = np.stack([0.15 + 0.7 * np.arange(10) / 9, np.full(10, 0.25)], 1)
_FACE[27:31] = np.stack([np.full(4, 0.5), 0.35 + 0.2 * np.arange(4) / 3], 1)
_FACE[31:36] = np.stack([0.4 + 0.2 * np.arange(5) / 4, np.full(5, 0.6)], 1)
for base, cx in ((36, 0.33), (42, 0.67)):
    ang = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    _FACE[base:base + 6] = np.stack([cx + 0.08 * np.cos(ang), 0.4 + 0.03 * np.sin(ang)], 1)
ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
_FACE[48:60] = np.stack([0.5 - 0.15 * np.cos(ang), 0.75 + 0.06 * np.sin(ang)], 1)
ang = np.linspace(0, 2 * np.pi, 8, endpoint=False)
_FACE[60:68] = np.stack([0.5 - 0.1 * np.cos(ang), 0.75 + 0.03 * np.sin(ang)], 1)


class ConstructedPoseForTests:
    """TEST ONLY: a deterministic 'extractor': a face in a fixed box of the upper middle of the frame,
    hands whose position follows the frame's mean brightness, hand confidence 0.8."""

    def __call__(self, image: np.ndarray) -> dict:
        m = float(np.asarray(image).mean()) / 255.0
        face = 0.35 + 0.3 * _FACE  # box x, y in [0.35, 0.65] (normalised)
        hands = np.zeros((2, 21, 2))
        hands[0] = (0.2 + 0.3 * m, 0.8) + 0.02 * np.arange(21)[:, None] / 21
        hands[1] = (0.8 - 0.3 * m, 0.8) + 0.02 * np.arange(21)[:, None] / 21
        return {"bodies": {"candidate": np.full((18, 2), 0.5), "subset": np.arange(18)[None].astype(float),
                           "score": np.ones((1, 18))},
                "hands": hands, "hands_score": np.full((2, 21), 0.8),
                "faces": face[None], "faces_score": np.ones((1, 68))}


def random_backbones(seed: int = 0) -> dict:
    """Every metric backbone as a seeded random network (results flagged ``test_backbones``)."""
    return {k: random_backbone_for_tests(k, seed) for k in ("inception", "i3d", "lpips", "arcface", "deep3d", "syncnet")}


def moving_frames(n: int = 20, h: int = 64, w: int = 64, seed: int = 0, phase: float = 0.0) -> np.ndarray:
    """uint8 [n, h, w, 3]: a textured background with a bright square moving left to right."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(40, 120, size=(h, w, 3), dtype=np.uint8)
    out = np.repeat(bg[None], n, 0)
    for t in range(n):
        x = int((t / max(n - 1, 1) * 0.6 + 0.1 + phase) * w) % (w - 12)
        out[t, h // 3:h // 3 + 12, x:x + 12] = 230
    return out


def tone(seconds: float, rate: int = 16000, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def write_wav(path, samples: np.ndarray, rate: int = 16000):
    """16-bit PCM mono wav."""
    import wave

    pcm = np.clip(np.round(np.asarray(samples, np.float64) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path
