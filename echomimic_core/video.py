"""Writing generated frames to an mp4 (H.264 video + AAC audio) with PyAV, streamed and atomic.

* Frames are written as they arrive (``VideoWriter.write``), so a long video never sits in memory.
* Float frames become uint8 by **truncation** of ``x*255`` like the official ``infer.py``.
* The file is encoded to a temporary file in the destination folder and renamed over the target only
  when ``close()`` succeeds; an exception inside the ``with`` block (or :meth:`abort`) deletes the
  temporary file, so a failed or interrupted run leaves no partial output behind.
* The audio track is cut to exactly ``frames_written / fps`` seconds (sample-exact before encoding).
"""

from __future__ import annotations

import os
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import InputError

AudioSource = Union[str, os.PathLike, tuple]


def frames_to_uint8(frames: Any) -> np.ndarray:
    """uint8 ``[n, H, W, 3]`` from frames in any of the forms the library produces.

    Accepts numpy arrays or torch tensors, ``[n,H,W,3]`` / ``[n,3,H,W]`` / a single ``[H,W,3]``/``[3,H,W]``
    frame. Floats are taken as [0, 1] and converted with ``(x*255)`` truncated (clipped first so that
    out-of-range values do not wrap around); uint8 passes through unchanged.
    """
    if hasattr(frames, "detach"):  # torch tensor
        frames = frames.detach().to("cpu")
        if frames.dtype.is_floating_point:
            frames = frames.float()
        frames = frames.numpy()
    array = np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise InputError(f"frames must be [n, H, W, 3] or [n, 3, H, W]; got shape {tuple(array.shape)}")
    if array.shape[-1] != 3 and array.shape[1] == 3:
        array = array.transpose(0, 2, 3, 1)
    if array.shape[-1] != 3:
        raise InputError(f"frames must have 3 colour channels; got shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"frames must be uint8 or float in [0, 1]; got {array.dtype}")
    scaled = np.clip(array.astype(np.float32) * 255.0, 0.0, 255.0)
    return np.ascontiguousarray(scaled.astype(np.uint8))  # astype truncates toward zero


def _fps_fraction(fps: float | int | Fraction) -> Fraction:
    value = Fraction(fps).limit_denominator(1001)
    if value <= 0:
        raise InputError(f"fps must be positive (got {fps})")
    return value


#: sample rates the AAC encoder accepts; anything else is resampled to 48 kHz
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    import av

    layout = "stereo" if samples.shape[0] >= 2 else "mono"
    samples = np.ascontiguousarray(samples[:2].astype(np.float32))
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=target)
    parts = [f.to_ndarray() for f in resampler.resample(frame)] + [f.to_ndarray() for f in resampler.resample(None)]
    return np.concatenate(parts, axis=1) if parts else np.zeros((samples.shape[0], 0), np.float32)


def prepare_audio(source: AudioSource) -> tuple[np.ndarray, int]:
    """:func:`load_audio_samples`, then resampled to 48 kHz when the rate is not one AAC supports."""
    samples, rate = load_audio_samples(source)
    if rate not in AAC_RATES:
        samples, rate = _resample(samples, rate, 48000), 48000
    return samples, rate


def load_audio_samples(source: AudioSource) -> tuple[np.ndarray, int]:
    """Decode an audio file (anything FFmpeg reads) or take ``(waveform, sample_rate)``.

    Returns float32 planar samples ``[channels, n]`` and the sample rate. Waveforms may be 1-D (mono) or
    ``[channels, n]``; torch tensors are accepted.
    """
    if isinstance(source, tuple):
        waveform, rate = source
        if hasattr(waveform, "detach"):
            waveform = waveform.detach().cpu().float().numpy()
        data = np.asarray(waveform, dtype=np.float32)
        if data.ndim == 1:
            data = data[None]
        if data.ndim == 3 and data.shape[0] == 1:  # ComfyUI-style [batch, channels, n]
            data = data[0]
        if data.ndim != 2 or int(rate) <= 0:
            raise InputError(f"audio waveform must be [n] or [channels, n] with a positive rate; got {data.shape}")
        return np.ascontiguousarray(data), int(rate)

    import av

    path = Path(source)
    if not path.is_file():
        raise InputError(f"audio file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputError(f"{path} has no audio stream")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate or stream.rate
            channels = stream.codec_context.channels or 1
            resampler = av.AudioResampler(format="fltp", layout="stereo" if channels >= 2 else "mono",
                                          rate=rate)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
    except InputError:
        raise
    except Exception as exc:  # PyAV raises many error classes for unreadable files
        raise InputError(f"cannot read audio from {path}: {exc}") from exc
    if not chunks:
        raise InputError(f"{path} contains no audio samples")
    return np.concatenate(chunks, axis=1).astype(np.float32), int(rate)


class VideoWriter:
    """Stream frames into ``path`` (mp4, H.264 yuv420p) and mux an AAC audio track on close.

    Use as a context manager::

        with VideoWriter("out.mp4", fps=24, audio="speech.wav") as writer:
            for chunk in frames:          # uint8 [n,H,W,3] or float [n,3,H,W] in [0,1]
                writer.write(chunk)

    ``audio`` is a file path or ``(waveform, sample_rate)``; it is cut to ``frames_written / fps``
    seconds (and zero-padded if shorter). ``crf`` is libx264's quality (its default 23 when None).
    Width and height are taken from the first frame and must be even (yuv420p).
    """

    def __init__(self, path: str | os.PathLike, fps: float = 24, audio: AudioSource | None = None,
                 crf: int | None = None, preset: str | None = None, audio_bitrate: int = 128_000) -> None:
        self.path = Path(path)
        self.fps = _fps_fraction(fps)
        self.crf = crf
        self.preset = preset
        self.audio_bitrate = int(audio_bitrate)
        self.frames_written = 0
        self._audio_source = audio
        self._audio: tuple[np.ndarray, int] | None = None
        if audio is not None:  # fail early, before any frame is produced
            self._audio = prepare_audio(audio)
        if not self.path.parent.is_dir():
            raise InputError(f"output folder does not exist: {self.path.parent}")
        suffix = self.path.suffix or ".mp4"
        # created by FFmpeg on the first frame, with the usual permissions; hidden, same folder (same filesystem)
        self._tmp = self.path.parent / f".{self.path.stem}.{uuid.uuid4().hex[:12]}.partial{suffix}"
        self._container = None
        self._vstream = None
        self._astream = None
        self._closed = False

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:  # last resort: never leave a temp file behind
        try:
            if not self._closed:
                self.abort()
        except Exception:
            pass

    # -- writing ---------------------------------------------------------------------------------
    def _open(self, height: int, width: int) -> None:
        import av

        if height % 2 or width % 2:
            raise InputError(f"H.264/yuv420p needs an even frame size; got {width}x{height}")
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        options = {}
        if self.crf is not None:
            options["crf"] = str(int(self.crf))
        if self.preset:
            options["preset"] = str(self.preset)
        if options:
            stream.options = options
        self._vstream = stream
        if self._audio is not None:
            samples, rate = self._audio
            layout = "stereo" if samples.shape[0] >= 2 else "mono"
            self._astream = self._container.add_stream("aac", rate=rate)
            self._astream.layout = layout
            self._astream.bit_rate = self.audio_bitrate

    def write(self, frames: Any) -> None:
        """Append frames (see :func:`frames_to_uint8` for the accepted forms)."""
        if self._closed:
            raise RuntimeError("VideoWriter is closed")
        import av

        array = frames_to_uint8(frames)
        if self._container is None:
            self._open(array.shape[1], array.shape[2])
        elif (array.shape[1], array.shape[2]) != (self._vstream.height, self._vstream.width):
            raise InputError(f"frame size changed from {self._vstream.width}x{self._vstream.height} "
                             f"to {array.shape[2]}x{array.shape[1]}")
        for image in array:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = self.frames_written
            frame.time_base = 1 / self.fps
            for packet in self._vstream.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1

    def _write_audio(self) -> None:
        import av

        samples, rate = self._audio
        wanted = int(round(self.frames_written * rate / self.fps))
        if samples.shape[1] >= wanted:
            samples = samples[:, :wanted]
        else:
            samples = np.pad(samples, ((0, 0), (0, wanted - samples.shape[1])))
        layout = "stereo" if samples.shape[0] >= 2 else "mono"
        samples = np.ascontiguousarray(samples[:2].astype(np.float32))
        block = 1024
        for start in range(0, samples.shape[1], block):
            piece = np.ascontiguousarray(samples[:, start:start + block])
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in self._astream.encode(frame):
                self._container.mux(packet)
        for packet in self._astream.encode(None):
            self._container.mux(packet)

    def close(self) -> Path:
        """Flush the encoders, mux the audio and move the finished file onto ``path``."""
        if self._closed:
            return self.path
        try:
            if self._container is None or self.frames_written == 0:
                raise InputError("no frames were written; nothing to save")
            for packet in self._vstream.encode(None):
                self._container.mux(packet)
            if self._astream is not None:
                self._write_audio()
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the target path is not touched."""
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass


def probe(path: str | os.PathLike) -> dict:
    """A few facts about a media file (used by tests and the CLI summary)."""
    import av

    with av.open(str(path)) as container:
        info: dict = {"duration": container.duration / 1e6 if container.duration else None}
        if container.streams.video:
            v = container.streams.video[0]
            info["video"] = {"codec": v.codec_context.name, "width": v.codec_context.width,
                             "height": v.codec_context.height, "frames": v.frames,
                             "fps": float(v.average_rate) if v.average_rate else None,
                             "duration": float(v.duration * v.time_base) if v.duration else None}
        if container.streams.audio:
            a = container.streams.audio[0]
            info["audio"] = {"codec": a.codec_context.name, "sample_rate": a.codec_context.sample_rate,
                             "channels": a.codec_context.channels,
                             "duration": float(a.duration * a.time_base) if a.duration else None}
    return info
