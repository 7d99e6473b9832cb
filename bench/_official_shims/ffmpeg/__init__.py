"""Stand-in for ``ffmpeg-python``: only ``input(f).output("-", format="s16le", ..., ac=1, ar=sr).run()``."""

from __future__ import annotations


class Error(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.stderr = message.encode()


class _Stream:
    def __init__(self, path, **_ignored):
        self.path = str(path)
        self.channels, self.rate = 1, 16000

    def output(self, _target, format="s16le", acodec="pcm_s16le", ac=1, ar=16000, **_ignored):
        if format != "s16le" or acodec != "pcm_s16le":
            raise Error(f"ffmpeg stand-in: only s16le/pcm_s16le output, not {format}/{acodec}")
        self.channels, self.rate = int(ac), int(ar)
        return self

    def run(self, cmd=None, capture_stdout=True, capture_stderr=True, **_ignored):
        import av
        import numpy as np

        layout = "mono" if self.channels == 1 else "stereo"
        try:
            with av.open(self.path) as container:
                resampler = av.AudioResampler(format="s16", layout=layout, rate=self.rate)
                parts = []
                for frame in container.decode(audio=0):
                    parts += [f.to_ndarray() for f in resampler.resample(frame)]
                parts += [f.to_ndarray() for f in resampler.resample(None)]
        except (av.FFmpegError, OSError) as exc:
            raise Error(str(exc)) from None
        pcm = np.concatenate([p.reshape(-1) for p in parts]) if parts else np.zeros(0, np.int16)
        return pcm.astype("<i2").tobytes(), b""


def input(path, **kwargs):  # noqa: A001 - the ffmpeg-python name
    return _Stream(path, **kwargs)
