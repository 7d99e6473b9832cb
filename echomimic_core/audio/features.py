"""One call from an audio source to the per-frame conditioning EchoMimicV2's UNet consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import InputError
from .decode import SAMPLE_RATE, load_waveform
from .encoder import WhisperFeatureEncoder
from .mel import log_mel
from .windows import (AUDIO_FEAT_LENGTH, _check_fps, audio_span_samples, frame_chunks, span_mel_frames,
                      video_frame_count)


@dataclass
class AudioFeatures:
    """Result of `encode_audio`.

    chunks:      [num_chunks, 10*(n_layer+1), 384] float32 CPU; chunk i conditions video frame i.
    features:    [positions, n_layer+1, 384] raw whisper states (50 per second).
    waveform:    [num_samples] float32 16 kHz mono waveform that was encoded.
    duration_s:  num_samples / 16000.
    sample_rate: always 16000.
    fps:         the frame rate the chunks were cut for.
    num_frames:  int(duration_s * fps), infer.py's cap: the video length to generate.
    num_chunks:  len(chunks), the pipeline's cap (>= num_frames).
    """

    chunks: torch.Tensor
    features: torch.Tensor
    waveform: Any
    duration_s: float
    sample_rate: int
    fps: float
    num_frames: int

    @property
    def num_chunks(self) -> int:
        return int(self.chunks.shape[0])

    @property
    def tokens_per_frame(self) -> int:
        return int(self.chunks.shape[1])

    def frames(self, length: int | None = None) -> torch.Tensor:
        """The first `length` chunks (default num_frames) as [length, tokens, 384]."""
        length = self.num_frames if length is None else int(length)
        if not 0 < length <= self.num_chunks:
            raise InputError(f"asked for {length} audio frames; this clip has {self.num_chunks} chunks")
        return self.chunks[:length]


def encode_audio(
    encoder: WhisperFeatureEncoder,
    source: Any,
    fps: float = 24,
    sample_rate: int | None = None,
    audio_feat_length: Sequence[int] = AUDIO_FEAT_LENGTH,
    max_frames: int | None = None,
) -> AudioFeatures:
    """Decode `source` (path, ComfyUI AUDIO dict, or array/tensor + sample_rate), compute the whole-clip
    log-mel, run the whisper encoder over 30 s segments and cut per-frame chunks at `fps`.

    With `max_frames` only the span those frames need is decoded and encoded (whole 30 s segments, see
    `audio_span_samples`): a long clip behind a short video costs the short video's audio, and
    `num_frames`/`duration_s` describe the decoded span."""
    fps = _check_fps(fps)
    span = None if max_frames is None else audio_span_samples(max_frames, fps, audio_feat_length)
    waveform = load_waveform(source, sample_rate, max_samples=span)
    return encode_waveform(encoder, waveform, fps, audio_feat_length, max_frames)


def encode_waveform(
    encoder: WhisperFeatureEncoder,
    waveform: Any,
    fps: float = 24,
    audio_feat_length: Sequence[int] = AUDIO_FEAT_LENGTH,
    max_frames: int | None = None,
) -> AudioFeatures:
    """`encode_audio` for a waveform already decoded by `load_waveform` (16 kHz mono float32; with
    `max_frames`, decoded with ``max_samples=audio_span_samples(max_frames, fps)``), so callers that need
    the waveform early (checks before loading models, gestures) decode it once."""
    fps = _check_fps(fps)
    span = None if max_frames is None else audio_span_samples(max_frames, fps, audio_feat_length)
    duration = waveform.shape[0] / SAMPLE_RATE
    num_frames = video_frame_count(duration, fps)
    if num_frames < 1:
        raise InputError(
            f"the audio lasts {duration * 1000:.1f} ms, shorter than one video frame at {fps} fps "
            f"({1000 / fps:.1f} ms). Give a longer clip."
        )
    mel = log_mel(waveform, n_mels=encoder.n_mels)
    if span is not None and waveform.shape[0] >= span:  # the clip goes on: keep the whole segments only
        mel = mel[:, : span_mel_frames(waveform.shape[0])]
    features = encoder.embeddings(mel)
    chunks = frame_chunks(features, fps, audio_feat_length)
    return AudioFeatures(
        chunks=chunks,
        features=features,
        waveform=waveform,
        duration_s=duration,
        sample_rate=SAMPLE_RATE,
        fps=fps,
        num_frames=num_frames,
    )
