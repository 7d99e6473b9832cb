"""Audio in, 16 kHz mono float32 out, the way the official code gets it.

The official loader runs the ffmpeg CLI (`-ac 1 -ar 16000 -f s16le`) and divides by 32768. PyAV wraps the
same libswresample, so `av.AudioResampler(format="s16", layout="mono", rate=16000)` followed by /32768 gives
the same samples (within 1 LSB). Everything that is not a file (ComfyUI AUDIO dicts, tensors, arrays) is
quantised to signed 16-bit frames first and pushed through that very resampler, so every input kind gets
the same down-mix ((L+R)/2 for stereo, not the 1.41x louder (L+R)/sqrt(2) of a float mix) and the same
resampling filter.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

SAMPLE_RATE = 16000
"""Sample rate of every waveform handed to the mel front end."""

_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
_SILENCE_PEAK = 3  # int16 LSBs; -80 dBFS. Dithered "digital silence" wavs carry +-1 LSB.
_CHUNK = 1 << 16  # samples per frame fed to the resampler (its output does not depend on the split)


def _new_resampler():
    import av

    return av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)


def _frames_to_int16(frames) -> list[np.ndarray]:
    return [f.to_ndarray().reshape(-1) for f in frames]


def _finish(parts: list[np.ndarray], what: str) -> np.ndarray:
    pcm = np.concatenate(parts) if parts else np.zeros(0, np.int16)
    if pcm.size == 0:
        raise InputError(f"{what} contains no audio samples (empty clip). Give a clip with some sound in it.")
    wave = pcm.astype(np.float32) / 32768.0
    peak = int(np.abs(pcm.astype(np.int32)).max())
    if peak <= _SILENCE_PEAK:
        warnings.warn(
            f"{what} is silent (peak {peak} of 32768, below -80 dBFS); the features will be those of "
            "silence and the animated mouth will not move. Check that the right clip/track was given.",
            stacklevel=3,
        )
    return wave


_FLOAT_FORMATS = ("flt", "fltp", "dbl", "dblp")


def _check_finite_frame(frame, path: Path) -> None:
    """NaN/inf in a float file would silently become garbage samples in the s16 conversion (and fail
    later inside the AAC encoder): refuse them here, where the file is named."""
    if frame.format.name in _FLOAT_FORMATS and not np.isfinite(frame.to_ndarray()).all():
        raise InputError(f"audio file {path} contains NaN/inf samples; re-export it (e.g. as 16-bit wav) "
                         "and run again.")


def decode_file(path: str | os.PathLike, max_samples: int | None = None) -> np.ndarray:
    """Decode the first audio stream of any file PyAV/FFmpeg can read (wav, mp3, flac, m4a, mp4, ...)
    to 16 kHz mono float32 in [-1, 1). With ``max_samples`` decoding stops once that many 16 kHz samples
    are out (memory and time bounded by the span asked for, not by the file)."""
    import av

    path = Path(path)
    if not path.exists():
        raise InputError(f"audio file not found: {path}. Check the path (it is resolved from {Path.cwd()}).")
    if not path.is_file():
        raise InputError(f"audio path is not a file: {path}. Give the path of an audio or video file.")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InputError(
            f"cannot read audio file {path}: {exc}. The file is damaged or not an audio/video format "
            "FFmpeg understands; re-export it as wav/mp3/flac/m4a."
        ) from None
    with container:
        streams = container.streams.audio
        if not streams:
            raise InputError(
                f"{path} has no audio stream (video streams only?). Give a file that contains sound."
            )
        resampler = _new_resampler()
        parts: list[np.ndarray] = []
        have = 0
        try:
            for frame in container.decode(streams[0]):
                _check_finite_frame(frame, path)
                frame.pts = None  # let the resampler follow the samples, not the container clock
                new = _frames_to_int16(resampler.resample(frame))
                parts += new
                have += sum(p.size for p in new)
                if max_samples is not None and have >= max_samples:
                    break
            else:
                parts += _frames_to_int16(resampler.resample(None))
        except (av.FFmpegError, ValueError) as exc:
            raise InputError(
                f"decoding the audio of {path} failed: {exc}. The file is damaged or truncated; "
                "re-export it as wav/mp3/flac/m4a."
            ) from None
    if max_samples is not None and have >= max_samples:
        parts = [np.concatenate(parts)[:max_samples]]
    return _finish(parts, f"audio file {path}")


def _to_int16(samples: np.ndarray, what: str) -> np.ndarray:
    """[C, T] array of any supported sample format -> int16 [C, T] like FFmpeg's flt->s16 conversion."""
    kind = samples.dtype.kind
    if samples.dtype == np.int16:
        return samples
    if kind == "f":
        data = samples.astype(np.float64, copy=False)
        if not np.all(np.isfinite(data)):
            bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
            raise InputError(
                f"{what} contains {bad} NaN/inf sample(s). Fix the upstream node/array "
                "(e.g. torch.nan_to_num) before encoding the audio."
            )
        peak = float(np.max(np.abs(data))) if data.size else 0.0
        if peak > 1.0 + 1.0 / 32768:
            warnings.warn(
                f"{what} peaks at {peak:.3g}, above the float range [-1, 1]; samples are clipped like "
                "FFmpeg does. Normalise the audio if that is not intended.",
                stacklevel=4,
            )
        return np.clip(np.rint(data * 32768.0), -32768, 32767).astype(np.int16)
    if samples.dtype == np.int32:
        return (samples >> 16).astype(np.int16)  # FFmpeg's s32 -> s16 keeps the high 16 bits
    if samples.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        return ((samples.astype(np.int16) - 128) << 8).astype(np.int16)
    raise InputError(
        f"{what} has unsupported sample format {samples.dtype}. Use float32/float64 in [-1, 1], "
        "int16, int32 or uint8 PCM."
    )


def decode_array(samples: Any, sample_rate: int, what: str = "audio array",
                 max_samples: int | None = None) -> np.ndarray:
    """Mix down and resample a [T], [C, T] or [1, C, T] array/tensor of samples to 16 kHz mono float32,
    through the same s16 PyAV resampler a file takes (only as far as ``max_samples`` 16 kHz samples
    need, when given)."""
    import av

    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        if isinstance(sample_rate, float) and sample_rate.is_integer() and sample_rate > 0:
            sample_rate = int(sample_rate)
        else:
            raise InputError(
                f"{what}: sample_rate must be a positive integer number of Hz, got {sample_rate!r}."
            )
    sample_rate = int(sample_rate)
    arr = _as_numpy(samples, what)
    if arr.ndim == 3:
        if arr.shape[0] != 1:
            raise InputError(
                f"{what} holds a batch of {arr.shape[0]} clips (shape {tuple(arr.shape)}); one clip is "
                "expected here. Split the batch and encode the clips one at a time."
            )
        arr = arr[0]
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(
            f"{what} has shape {tuple(arr.shape)}; expected [samples], [channels, samples] or "
            "[1, channels, samples]."
        )
    if arr.shape[1] == 0 or arr.shape[0] == 0:
        raise InputError(f"{what} is empty (shape {tuple(arr.shape)}). Give a clip with some sound in it.")
    channels = arr.shape[0]
    if channels not in _LAYOUTS:
        hint = (
            " It looks like [samples, channels]; transpose it to [channels, samples]."
            if arr.shape[1] in _LAYOUTS
            else ""
        )
        raise InputError(
            f"{what} has {channels} channels (shape {tuple(arr.shape)}); 1 to 8 channels in "
            f"[channels, samples] order are supported.{hint}"
        )
    if max_samples is not None:  # the source span that covers max_samples, plus the filter's reach
        arr = arr[:, : int(np.ceil(max_samples * sample_rate / SAMPLE_RATE)) + sample_rate // 20]
    pcm = np.ascontiguousarray(_to_int16(arr, what))
    resampler = _new_resampler()
    parts: list[np.ndarray] = []
    for start in range(0, pcm.shape[1], _CHUNK):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm[:, start : start + _CHUNK]), format="s16p", layout=_LAYOUTS[channels]
        )
        frame.sample_rate = sample_rate
        parts += _frames_to_int16(resampler.resample(frame))
    parts += _frames_to_int16(resampler.resample(None))
    if max_samples is not None and parts:
        parts = [np.concatenate(parts)[:max_samples]]
    return _finish(parts, what)


def _as_numpy(samples: Any, what: str) -> np.ndarray:
    try:
        import torch

        if isinstance(samples, torch.Tensor):
            if samples.is_complex():
                raise InputError(f"{what} is complex-valued; give real audio samples.")
            samples = samples.detach().cpu()
            if samples.dtype == torch.bfloat16:
                samples = samples.float()
            return samples.numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    arr = np.asarray(samples)
    if arr.dtype == object:
        raise InputError(f"{what} is not a numeric array (dtype object); give float or int16 samples.")
    return arr


def load_waveform(source: Any, sample_rate: int | None = None, max_samples: int | None = None) -> np.ndarray:
    """Any audio source -> float32 numpy array [S], 16 kHz mono, values int16/32768 (official ffmpeg path).

    source:
      * a path (str / os.PathLike) to wav, mp3, flac, m4a, or a video file with an audio track;
      * a ComfyUI ``AUDIO`` dict ``{"waveform": tensor [B, C, T], "sample_rate": int}`` with B == 1;
      * a torch tensor or numpy array [T], [C, T] or [1, C, T] (float in [-1, 1] or int16 PCM) together
        with ``sample_rate``.
    ``max_samples`` stops decoding after that many 16 kHz samples (see ``audio_span_samples``).
    Raises InputError for empty, corrupt, NaN/inf, batched (B > 1) or unsupported input; warns for silence.
    """
    if max_samples is not None and int(max_samples) < 1:
        raise InputError(f"max_samples must be positive, got {max_samples!r}")
    if isinstance(source, (str, os.PathLike)):
        if sample_rate is not None:
            warnings.warn("sample_rate is ignored for files: the file's own rate is used.", stacklevel=2)
        return decode_file(source, max_samples)
    if isinstance(source, dict):
        if "waveform" not in source or "sample_rate" not in source:
            raise InputError(
                "audio dict must be a ComfyUI AUDIO value with keys 'waveform' [B, C, T] and 'sample_rate'; "
                f"got keys {sorted(source)}."
            )
        wave = source["waveform"]
        ndim = getattr(wave, "ndim", None)
        if ndim != 3:
            raise InputError(
                f"AUDIO waveform must have shape [batch, channels, samples]; got {ndim}-D "
                f"{tuple(getattr(wave, 'shape', ()))}."
            )
        return decode_array(wave, source["sample_rate"], what="AUDIO input", max_samples=max_samples)
    if sample_rate is None:
        raise InputError(
            "a raw waveform needs its sample rate: call load_waveform(samples, sample_rate=...)."
        )
    if isinstance(source, (bytes, bytearray)):
        raise InputError("raw bytes are not supported; give a file path, an AUDIO dict or an array.")
    return decode_array(source, sample_rate, max_samples=max_samples)
