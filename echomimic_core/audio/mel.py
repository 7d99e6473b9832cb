"""Whisper's 80-bin log-mel spectrogram of a whole clip (official `log_mel_spectrogram` recipe).

STFT n_fft 400, hop 160, periodic Hann, centred with reflect padding; the last STFT frame is dropped, so a
clip of S samples gives S // 160 frames (100 per second). Power spectrum -> Slaney mel filterbank (the one
librosa/whisper ship, rebuilt here with transformers' `mel_filter_bank`) -> log10 with a 1e-10 floor ->
clamp from below at (max over the WHOLE clip - 8) -> (x + 4) / 4.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..errors import InputError
from .decode import SAMPLE_RATE

N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
SEGMENT_FRAMES = 3000
"""Mel frames per encoder pass (30 s); the encoder maps them to 1500 positions (50 per second)."""


@lru_cache(maxsize=4)
def _filters_np(n_mels: int) -> np.ndarray:
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return np.ascontiguousarray(bank.T.astype(np.float32))  # [n_mels, 201]


def mel_filters(n_mels: int = N_MELS) -> torch.Tensor:
    """Slaney mel filterbank [n_mels, 201] for 16 kHz, n_fft 400 (equals whisper's mel_filters.npz to ~1e-9)."""
    return torch.from_numpy(_filters_np(n_mels))


def log_mel(waveform, n_mels: int = N_MELS) -> torch.Tensor:
    """16 kHz mono waveform [S] (numpy or torch, float) -> float32 log-mel [n_mels, S // 160]."""
    wav = torch.as_tensor(np.asarray(waveform) if not isinstance(waveform, torch.Tensor) else waveform)
    if wav.ndim != 1:
        raise InputError(
            f"log_mel expects a 1-D 16 kHz mono waveform, got shape {tuple(wav.shape)}; "
            "use load_waveform() to decode and mix down first."
        )
    if not torch.is_floating_point(wav):
        raise InputError(f"log_mel expects float samples in [-1, 1], got dtype {wav.dtype}; use load_waveform().")
    wav = wav.to(torch.float32)
    if wav.numel() < N_FFT:
        raise InputError(
            f"audio is too short for a spectrogram: {wav.numel()} samples at 16 kHz "
            f"(at least {N_FFT}, i.e. 25 ms, are needed). Give a longer clip."
        )
    if not bool(torch.isfinite(wav).all()):
        raise InputError("waveform contains NaN/inf samples; clean it (e.g. torch.nan_to_num) first.")
    window = torch.hann_window(N_FFT, periodic=True, device=wav.device)
    spec = torch.stft(wav, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = spec[:, :-1].abs() ** 2
    mel = mel_filters(n_mels).to(wav.device) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def mel_segments(mel: torch.Tensor, segment_frames: int = SEGMENT_FRAMES):
    """Split a whole-clip log-mel [n_mels, M] into the official non-overlapping encoder windows.

    Yields (segment [n_mels, segment_frames], n_valid) where the tail segment is zero-padded in the
    normalised log-mel domain and n_valid counts its real frames."""
    total = mel.shape[-1]
    for start in range(0, total, segment_frames):
        seg = mel[:, start : start + segment_frames]
        n_valid = seg.shape[-1]
        if n_valid < segment_frames:
            seg = torch.nn.functional.pad(seg, (0, segment_frames - n_valid))
        yield seg, n_valid
