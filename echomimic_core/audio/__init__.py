"""EchoMimicV2 audio path: waveform -> whisper-tiny encoder states -> per-video-frame conditioning.

    encoder = load_audio_encoder("pretrained_weights/audio_processor/tiny.pt")   # or an HF whisper folder
    feats = encode_audio(encoder, "speech.wav", fps=24)
    feats.chunks      # [num_chunks, 10*(n_layer+1), 384]  -> UNet audio context, chunk i = video frame i
    feats.num_frames  # int(duration * fps): the video length to generate

Step by step: load_waveform -> log_mel -> encoder.embeddings -> frame_chunks.
"""

from .decode import SAMPLE_RATE, load_waveform
from .encoder import WhisperFeatureEncoder, load_audio_encoder, openai_to_hf_encoder_key, whisper_config_from_dims
from .features import AudioFeatures, encode_audio, encode_waveform
from .mel import log_mel, mel_filters
from .windows import (
    audio_chunk_count,
    chunk_count,
    chunk_source_indices,
    feature_positions,
    frame_chunks,
    video_frame_count,
)

__all__ = [
    "SAMPLE_RATE",
    "AudioFeatures",
    "WhisperFeatureEncoder",
    "audio_chunk_count",
    "chunk_count",
    "chunk_source_indices",
    "encode_audio",
    "encode_waveform",
    "feature_positions",
    "frame_chunks",
    "load_audio_encoder",
    "load_waveform",
    "log_mel",
    "mel_filters",
    "openai_to_hf_encoder_key",
    "video_frame_count",
    "whisper_config_from_dims",
]
