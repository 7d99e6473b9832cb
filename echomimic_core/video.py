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
import shutil
import uuid
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import InputError, NumericalError

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
    scaled = array.astype(np.float32) * 255.0
    if not np.isfinite(scaled).all():  # NaN would silently become black pixels
        raise NumericalError("frames contain NaN/inf values; the generation diverged (check the weights with "
                             "`python -m echomimic_core check --models DIR` or lower the guidance scale)")
    scaled = np.clip(scaled, 0.0, 255.0)
    return np.ascontiguousarray(scaled.astype(np.uint8))  # astype truncates toward zero


def _fps_fraction(fps: float | int | Fraction) -> Fraction:
    value = Fraction(fps).limit_denominator(1001)
    if value <= 0:
        raise InputError(f"fps must be positive (got {fps})")
    return value


#: sample rates the AAC encoder accepts; anything else is resampled to 48 kHz
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)

_BLOCK = 1 << 15  # samples per block when arrays are resampled or encoded


def _check_finite(block: np.ndarray, what: str) -> None:
    if not np.isfinite(block).all():
        raise InputError(f"{what} contains NaN/inf samples; clean the audio (e.g. re-export it) and run again")


class AudioTrack:
    """The audio to mux: checked when the writer is created, decoded only as far as it is used.

    ``source`` is a file path (anything FFmpeg reads) or ``(waveform, sample_rate)`` with a waveform of
    ``[n]``, ``[channels, n]`` or ``[1, channels, n]`` (numpy or torch). A file is opened at once (missing,
    unreadable or stream-less files fail before any frame is generated) but decoded only in
    :meth:`blocks`, which stops at the samples the video needs, so a half-hour clip behind a four-frame
    video costs a few blocks, not the whole decoded clip.
    """

    def __init__(self, source: AudioSource) -> None:
        self._array: np.ndarray | None = None
        self._path: Path | None = None
        if isinstance(source, tuple):
            waveform, rate = source
            if hasattr(waveform, "detach"):
                waveform = waveform.detach().cpu().float().numpy()
            data = np.asarray(waveform, dtype=np.float32)
            if data.ndim == 3 and data.shape[0] == 1:  # ComfyUI-style [batch, channels, n]
                data = data[0]
            if data.ndim == 1:
                data = data[None]
            if data.ndim != 2 or int(rate) <= 0:
                raise InputError(f"audio waveform must be [n] or [channels, n] with a positive rate; got {data.shape}")
            _check_finite(data, "the audio waveform")
            self._array, self.rate, channels = np.ascontiguousarray(data[:2]), int(rate), data.shape[0]
        else:
            import av

            self._path = Path(source)
            if not self._path.is_file():
                raise InputError(f"audio file not found: {self._path}")
            try:
                with av.open(str(self._path)) as container:
                    if not container.streams.audio:
                        raise InputError(f"{self._path} has no audio stream")
                    ctx = container.streams.audio[0].codec_context
                    self.rate, channels = int(ctx.sample_rate or container.streams.audio[0].rate), ctx.channels or 1
            except InputError:
                raise
            except Exception as exc:  # PyAV raises many error classes for unreadable files
                raise InputError(f"cannot read audio from {self._path}: {exc}") from None
        self.layout = "stereo" if channels >= 2 else "mono"
        self.out_rate = self.rate if self.rate in AAC_RATES else 48000

    def _native_blocks(self):
        """float32 planar blocks at the output rate, in order, until the source ends."""
        import av

        resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.out_rate)
        what = f"audio file {self._path}" if self._path is not None else "the audio waveform"
        if self._array is not None:
            if self.out_rate == self.rate:
                for start in range(0, self._array.shape[1], _BLOCK):
                    yield self._array[:, start:start + _BLOCK]
                return
            starts = list(range(0, self._array.shape[1], _BLOCK))
            for start in starts + [None]:  # None flushes the resampler
                frame = None
                if start is not None:
                    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(self._array[:, start:start + _BLOCK]),
                                                       format="fltp", layout=self.layout)
                    frame.sample_rate = self.rate
                for out in resampler.resample(frame):
                    yield out.to_ndarray()
            return
        try:
            with av.open(str(self._path)) as container:
                for frame in container.decode(container.streams.audio[0]):
                    frame.pts = None  # follow the samples, not the container clock
                    for out in resampler.resample(frame):
                        block = out.to_ndarray()
                        _check_finite(block, what)
                        yield block
                for out in resampler.resample(None):
                    yield out.to_ndarray()
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read audio from {self._path}: {exc}") from None

    def blocks(self, wanted: int | None = None):
        """float32 planar ``[channels, n]`` blocks at :attr:`out_rate`: exactly ``wanted`` samples in all
        (cut, or zero-padded at the end), or the whole source when ``wanted`` is None. Decoding stops as
        soon as ``wanted`` samples are out."""
        given = 0
        channels = 2 if self.layout == "stereo" else 1
        for block in self._native_blocks():
            block = np.ascontiguousarray(block[:channels], dtype=np.float32)
            if wanted is not None:
                block = block[:, :wanted - given]
            if block.shape[1]:
                given += block.shape[1]
                yield block
            if wanted is not None and given >= wanted:
                return
        while wanted is not None and given < wanted:
            n = min(_BLOCK, wanted - given)
            given += n
            yield np.zeros((channels, n), np.float32)


def load_audio_samples(source: AudioSource) -> tuple[np.ndarray, int]:
    """Decode a whole audio file (anything FFmpeg reads) or take ``(waveform, sample_rate)``: float32
    planar samples ``[channels, n]`` (at most two channels) and the sample rate (resampled to 48 kHz when
    the rate is not one AAC supports)."""
    track = AudioTrack(source)
    parts = list(track.blocks())
    if not parts:
        raise InputError(f"{source} contains no audio samples")
    return np.concatenate(parts, axis=1), track.out_rate


def estimate_mp4_bytes(num_frames: int, width: int, height: int) -> int:
    """A low estimate of an H.264 (crf 23) + AAC mp4's size, for the free-space check: 0.05 bytes per
    pixel and frame (talking-head video at crf 23 measures 0.02-0.1) plus 1 MiB of container and audio."""
    return int(num_frames) * int(width) * int(height) // 20 + (1 << 20)


def check_output_path(path: str | os.PathLike, overwrite: bool = True, min_free_bytes: int = 0) -> Path:
    """Cheap checks of an output video path, run before any heavy work: not a folder, its folder exists
    and is writable (tried for real: a read-only mount or a too-long name fails here, not after the run),
    an existing file only with ``overwrite``, and at least ``min_free_bytes`` free there (see
    :func:`estimate_mp4_bytes`)."""
    path = Path(path)
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError as exc:  # e.g. a name longer than the filesystem allows
        raise InputError(f"unusable output path {str(path)[:120]}: {exc.strerror or exc}; choose a shorter "
                         "name") from None
    if is_dir:
        raise InputError(f"output path {path} is a folder; give a file name such as {path / 'out.mp4'}")
    if not path.parent.is_dir():
        raise InputError(f"output folder does not exist: {path.parent}")
    if exists and not overwrite:
        raise InputError(f"{path} already exists; choose another name or allow overwriting (--overwrite)")
    probe_file = path.parent / f".{path.stem}.{uuid.uuid4().hex[:12]}.partial{path.suffix or '.mp4'}"
    try:
        probe_file.touch(exist_ok=False)
    except OSError as exc:
        raise InputError(f"cannot write into {path.parent}: {exc.strerror or exc}; choose another output "
                         "path") from None
    try:
        probe_file.unlink()
    except OSError:
        pass
    free = shutil.disk_usage(path.parent).free
    if free < min_free_bytes:
        raise InputError(f"only {free / 2**20:.1f} MiB free in {path.parent}, about {min_free_bytes / 2**20:.1f} MiB "
                         "are needed for the video; free some space or choose another output folder")
    return path


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
        # fail early, before any frame is produced: the audio is opened (not decoded), the path is tried
        self._audio = AudioTrack(audio) if audio is not None else None
        check_output_path(self.path)
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
            self._astream = self._container.add_stream("aac", rate=self._audio.out_rate)
            self._astream.layout = self._audio.layout
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
        try:
            for image in array:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = self.frames_written
                frame.time_base = 1 / self.fps
                for packet in self._vstream.encode(frame):
                    self._container.mux(packet)
                self.frames_written += 1
        except OSError as exc:  # disk full, file system gone: one line naming the file, not an FFmpeg trace
            raise self._write_error(exc) from None

    def _write_audio(self) -> None:
        """Encode exactly ``frames_written / fps`` seconds of the track, block by block."""
        import av

        track = self._audio
        wanted = int(round(self.frames_written * track.out_rate / self.fps))
        position = 0
        for samples in track.blocks(wanted):
            for start in range(0, samples.shape[1], 1024):
                piece = np.ascontiguousarray(samples[:, start:start + 1024])
                frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=track.layout)
                frame.sample_rate = track.out_rate
                frame.pts = position
                frame.time_base = Fraction(1, track.out_rate)
                position += piece.shape[1]
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
        except OSError as exc:
            self.abort()
            raise self._write_error(exc) from None
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def _write_error(self, exc: OSError) -> InputError:
        return InputError(f"writing {self.path} failed: {exc.strerror or exc}; free some space or choose "
                          "another output folder")

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
        except OSError as exc:  # never let the cleanup hide the error that caused it
            warnings.warn(f"could not remove the temporary file {self._tmp}: {exc}", stacklevel=2)


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
