"""Helpers of the preprocessing tests: a synthetic source video and a fake pose extractor."""

from __future__ import annotations

from pathlib import Path

import numpy as np

W, H, SRC_FPS, N_SRC = 96, 80, 30, 24


def nose(k: int) -> tuple[float, float]:
    return 0.5 + 0.1 * np.sin(k / 5), 0.3


def write_video(path: Path, with_audio: bool) -> None:
    import av

    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=SRC_FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        a_s = c.add_stream("aac", rate=16000) if with_audio else None
        if a_s is not None:
            a_s.layout = "mono"
        for k in range(N_SRC):
            img = np.full((H, W, 3), 40, np.uint8)
            x, y = nose(k)
            img[int(y * H) - 2:int(y * H) + 3, int(x * W) - 2:int(x * W) + 3] = 255
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if a_s is not None:
            t = np.arange(int(16000 * N_SRC / SRC_FPS)) / 16000
            pcm = (0.3 * np.sin(2 * np.pi * 330 * t) * 32767).astype(np.int16)[None]
            for i in range(0, pcm.shape[1], 1024):
                fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + 1024]), format="s16", layout="mono")
                fr.sample_rate = 16000
                for p in a_s.encode(fr):
                    c.mux(p)
            for p in a_s.encode():
                c.mux(p)


class FakeExtractor:
    """Stands in for DWPose: one person whose nose follows the white square of the test video."""

    def __init__(self, face_scale: float = 1.0):
        self.face_scale = face_scale

    def __call__(self, img):
        ys, xs = np.nonzero(img[..., 0] > 200)
        x, y = (xs.mean() + 0.5) / img.shape[1], (ys.mean() + 0.5) / img.shape[0]
        body = np.array([[x, y], [x, y + 0.25], [x - 0.15, y + 0.25], [x - 0.2, y + 0.45], [x - 0.2, y + 0.6],
                         [x + 0.15, y + 0.25], [x + 0.2, y + 0.45], [x + 0.2, y + 0.6]] + [[-1, -1]] * 6
                        + [[x - 0.02, y - 0.02], [x + 0.02, y - 0.02], [x - 0.05, y], [x + 0.05, y]])
        subset = np.array([[float(i) if (i < 8 or i >= 14) else -1.0 for i in range(18)]])
        t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
        fs = self.face_scale
        face = np.stack([x + 0.05 * fs * np.cos(t), y - 0.04 + 0.08 * fs * np.sin(t)], -1)[None]
        hands = np.stack([np.stack([np.full(21, x - 0.2), np.linspace(0.85, 0.95, 21)], -1),
                          np.stack([np.full(21, x + 0.2), np.linspace(0.85, 0.95, 21)], -1)])
        return {"bodies": {"candidate": body, "subset": subset, "score": (subset >= 0).astype(float)},
                "hands": hands, "hands_score": np.ones((2, 21)), "faces": face, "faces_score": np.ones((1, 68))}
