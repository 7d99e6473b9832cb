"""Compact clip frames: `clips/<id>/frames.mp4` instead of one PNG per frame (`preprocess.py --frames mp4`).

H.264 (libx264 through PyAV), yuv420p, constant quality `crf` (16: visually lossless for training),
a keyframe every `gop` frames (12) so a random frame costs at most `gop - 1` extra decodes; frame k has
pts k in a 1/fps time base. The reader keeps the container open and the last decoded group of frames,
so consecutive frames (stage 2 clips) decode once. Frames are written one at a time (streaming: a
long video is never held in memory).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from echomimic_core.errors import InputError

FRAMES_MP4 = "frames.mp4"


def write_frames_mp4(path: Path, frames: Iterable[np.ndarray], fps: int = 24, crf: int = 16, gop: int = 12) -> int:
    """RGB uint8 [H, W, 3] frames (even H and W) → mp4; returns the number written."""
    import av

    n = 0
    with av.open(str(path), "w") as out:
        stream = None
        for img in frames:
            if stream is None:
                h, w = img.shape[:2]
                if h % 2 or w % 2:
                    raise InputError(f"frames.mp4 needs an even frame size, got {w}x{h}")
                stream = out.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "medium",
                                                                     "g": str(gop), "keyint_min": str(gop),
                                                                     "sc_threshold": "0"})
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.time_base = Fraction(1, fps)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = n
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return n


class Mp4Frames:
    """Random access to frame k of a frames.mp4 (RGB uint8 [H, W, 3])."""

    def __init__(self, path: Path, fps: int = 24):
        self.path, self.fps = Path(path), fps
        self._container = None
        self._decoder = None
        self._next = None   # index of the frame the open decoder yields next
        self._recent: dict[int, np.ndarray] = {}

    def _index(self, frame) -> int:
        return int(round(float(frame.pts * frame.time_base) * self.fps))

    def _open_at(self, k: int) -> None:
        import av

        if self._container is None:
            self._container = av.open(str(self.path))
        stream = self._container.streams.video[0]
        self._container.seek(int(k / self.fps / stream.time_base), stream=stream, backward=True, any_frame=False)
        self._decoder = self._container.decode(stream)
        self._next = None

    def frame(self, k: int) -> np.ndarray:
        if k in self._recent:
            return self._recent[k]
        if self._decoder is None or self._next is None or not (self._next <= k < self._next + 24):
            self._open_at(k)
        for fr in self._decoder:
            i = self._index(fr)
            self._next = i + 1
            if i < k - 24:
                continue
            self._recent[i] = fr.to_ndarray(format="rgb24")
            while len(self._recent) > 48:
                self._recent.pop(min(self._recent))
            if i >= k:
                break
        if k not in self._recent:
            raise IOError(f"{self.path}: frame {k} not found")
        return self._recent[k]

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._decoder = None

    def __getstate__(self):  # DataLoader workers reopen the file
        return {"path": self.path, "fps": self.fps}

    def __setstate__(self, state):
        self.__init__(state["path"], state["fps"])
