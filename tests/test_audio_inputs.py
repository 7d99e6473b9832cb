"""Audio inputs: files of several formats, ComfyUI AUDIO dicts, arrays, stereo down-mix level, and every
kind of bad input (each a clear InputError or a warning, never an error from inside torch/av)."""

from __future__ import annotations

import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from echomimic_core.audio import (
    chunk_count,
    encode_audio,
    feature_positions,
    load_audio_encoder,
    load_waveform,
    log_mel,
    video_frame_count,
)
from echomimic_core.errors import InputError


def rms(x) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))


def native_decode(path: Path) -> tuple[np.ndarray, int]:
    """What ComfyUI's LoadAudio hands over: PyAV decode at the native rate/channels, float [C, T]."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        parts = []
        for frame in container.decode(stream):
            x = frame.to_ndarray()
            if not frame.format.is_planar:
                x = x.reshape(-1, len(frame.layout.channels)).T
            if x.dtype == np.int16:
                x = x.astype(np.float32) / 32768.0
            parts.append(x)
        return np.concatenate(parts, axis=1), stream.rate


def write_audio(path: Path, pcm: np.ndarray, rate: int, codec: str, container_format: str | None = None,
                with_video: bool = False) -> Path:
    """Encode int16 [C, T] with PyAV (codec pcm_s16le / flac / aac), optionally next to a tiny video track."""
    layout = "mono" if pcm.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format=container_format) as out:
        if with_video:
            video = out.add_stream("libx264", rate=24)
            video.width = video.height = 16
            video.pix_fmt = "yuv420p"
        stream = out.add_stream(codec, rate=rate, layout=layout)
        fmt = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        frames = []
        if pcm.shape[1]:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm), format="s16p", layout=layout)
            frame.sample_rate = rate
            frames = resampler.resample(frame) + resampler.resample(None)
        for f in frames:
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if with_video:
            for i in range(3):
                img = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 40 * i, np.uint8), format="rgb24")
                for packet in video.encode(img):
                    out.mux(packet)
            for packet in video.encode(None):
                out.mux(packet)
    return path


@pytest.fixture(scope="module")
def encoder(fixtures: Path):
    return load_audio_encoder(fixtures / "weights" / "audio_processor" / "tiny.pt")


@pytest.fixture(scope="module")
def speech(media: Path) -> Path:
    return media / "audio" / "speech_en_3s_16k_mono.wav"


# ---------------------------------------------------------------- files


def test_speech_wav_encodes(encoder, speech, fixture_config):
    fps = fixture_config["run"]["fps"]
    feats = encode_audio(encoder, speech, fps=fps)
    assert feats.sample_rate == 16000 and feats.duration_s == pytest.approx(3.0)
    assert feats.features.shape == (150, encoder.num_states, encoder.d_model)
    assert feats.chunks.shape == (chunk_count(150, fps), encoder.tokens_per_frame, encoder.d_model)
    assert feats.num_frames == video_frame_count(3.0, fps) == int(3.0 * fps)
    assert feats.frames().shape[0] == feats.num_frames
    assert torch.isfinite(feats.chunks).all()


def test_stereo_mp3_has_official_mono_level(media, speech):
    """The official ffmpeg `-ac 1` mix is (L+R)/2 (same level as each channel); a float `flt` mix would be
    (L+R)/sqrt(2), 1.41x louder. The stereo mp3 was made from the 3 s wav with ffmpeg's mono->stereo upmix,
    which puts the wav into each channel at about 0.67 of its RMS."""
    mono = load_waveform(speech)
    stereo_path = media / "audio" / "speech_en_3s_44k_stereo.mp3"
    mixed = load_waveform(stereo_path)
    assert mixed.shape == mono.shape == (48000,)
    channels, _ = native_decode(stereo_path)
    per_channel = rms(channels[0])
    assert rms(mixed) == pytest.approx(per_channel, rel=0.01)  # official level
    assert abs(rms(mixed) / (np.sqrt(2) * per_channel) - 1) > 0.25  # not the flt level
    assert 0.6 < rms(mixed) / rms(mono) < 0.75
    assert np.corrcoef(mixed, mono)[0, 1] > 0.9  # same speech, time-aligned


def test_stereo_array_matches_ffmpeg_s16_mix():
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal((2, 16000)) * 6000).clip(-32768, 32767).astype(np.int16)
    official = np.floor((pcm[0].astype(np.int64) + pcm[1] + 1) / 2)  # s16 mix (L+R)/2, rounded
    for source in (pcm, torch.from_numpy(pcm), pcm.astype(np.float32) / 32768):
        got = load_waveform(source, sample_rate=16000) * 32768
        assert np.abs(got - official).max() <= 1
    rng_float = torch.from_numpy(pcm.astype(np.float32) / 32768)[None]
    got = load_waveform({"waveform": rng_float, "sample_rate": 16000}) * 32768
    assert np.abs(got - official).max() <= 1
    assert rms(got) == pytest.approx(rms(official), rel=1e-3)


@pytest.mark.parametrize("name", ["echomimicv2_demo_good_zh.wav", "speech_en_3s_44k_stereo.mp3",
                                  "speech_en_8s_16k_mono.wav"])
def test_comfy_audio_dict_matches_file_path(media, name):
    path = media / "audio" / name
    samples, rate = native_decode(path)
    from_dict = load_waveform({"waveform": torch.from_numpy(samples)[None], "sample_rate": rate})
    from_file = load_waveform(path)
    assert from_dict.shape == from_file.shape
    assert np.abs(from_dict - from_file).max() * 32768 <= 1.0


def test_flac_m4a_and_mp4_audio_track(tmp_path, speech):
    wave = load_waveform(speech)
    pcm = np.round(wave * 32768).astype(np.int16)[None]
    flac = write_audio(tmp_path / "a.flac", pcm, 16000, "flac")
    assert np.array_equal(load_waveform(flac), wave)  # lossless
    m4a = write_audio(tmp_path / "a.m4a", pcm, 16000, "aac", "mp4")
    got = load_waveform(m4a)
    assert abs(got.shape[0] - wave.shape[0]) <= 2048 and rms(got) == pytest.approx(rms(wave), rel=0.1)
    # the same samples declared as 44.1 kHz stereo, in an mp4 next to an h264 video track
    mp4 = write_audio(tmp_path / "v.mp4", np.repeat(pcm, 2, axis=0), 44100, "aac", "mp4", with_video=True)
    got = load_waveform(mp4)
    expected = wave.shape[0] * 16000 / 44100
    assert got.dtype == np.float32 and got.ndim == 1 and abs(got.shape[0] - expected) < 0.05 * expected
    assert rms(got) == pytest.approx(rms(wave), rel=0.1)


def test_resampled_44k_array_duration():
    sr = 44100
    t = np.arange(sr * 2) / sr
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = load_waveform(tone, sample_rate=sr)
    assert out.shape == (32000,)
    assert rms(out) == pytest.approx(0.3 / np.sqrt(2), rel=0.02)


def test_silence_warns_but_encodes(encoder, media):
    with pytest.warns(UserWarning, match="silent"):
        feats = encode_audio(encoder, media / "audio" / "silence_2s_16k_mono.wav", fps=24)
    assert feats.features.shape[0] == feature_positions(32000) == 100
    assert torch.isfinite(feats.chunks).all()
    with pytest.warns(UserWarning, match="silent"):
        load_waveform(np.zeros(16000, np.float32), sample_rate=16000)


# ---------------------------------------------------------------- bad input


def test_corrupt_file(media):
    path = media / "audio" / "corrupt_truncated_header.wav"
    with pytest.raises(InputError, match="corrupt_truncated_header.wav") as info:
        load_waveform(path)
    assert "damaged" in str(info.value)


def test_missing_and_non_audio_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_waveform(tmp_path / "nope.wav")
    with pytest.raises(InputError, match="not a file"):
        load_waveform(tmp_path)
    (tmp_path / "text.wav").write_text("hello, this is not audio at all")
    with pytest.raises(InputError, match="text.wav"):
        load_waveform(tmp_path / "text.wav")
    # a video without an audio track
    path = tmp_path / "silent_video.mp4"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=24)
        video.width = video.height = 16
        video.pix_fmt = "yuv420p"
        for i in range(2):
            for packet in video.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    with pytest.raises(InputError, match="no audio stream"):
        load_waveform(path)


def test_empty_wav_file(tmp_path):
    import wave

    path = tmp_path / "empty.wav"
    with wave.open(str(path), "wb") as w:  # a valid header with zero samples
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"")
    assert path.stat().st_size == 44
    with pytest.raises(InputError, match="no audio samples"):
        load_waveform(path)


@pytest.mark.parametrize(
    "source, sample_rate, match",
    [
        (np.zeros(0, np.float32), 16000, "empty"),
        (np.array([0.1, np.nan] * 800, np.float32), 16000, "NaN/inf"),
        (torch.tensor([0.1, float("inf")] * 800), 16000, "NaN/inf"),
        (np.ones(1600, np.complex64), 16000, "unsupported sample format"),
        (torch.ones(1600, dtype=torch.complex64), 16000, "complex"),
        (np.array(["a", "b"]), 16000, "unsupported sample format"),
        (np.ones(1600, bool), 16000, "unsupported sample format"),
        (np.ones((1600, 2), np.float32) * 0.1, 16000, "transpose"),
        (np.ones((2, 2, 1600), np.float32) * 0.1, 16000, "batch of 2"),
        (np.ones((1, 1, 1, 1600), np.float32), 16000, "expected"),
        (np.ones(1600, np.float32), None, "sample rate"),
        (np.ones(1600, np.float32), 0, "sample_rate"),
        (np.ones(1600, np.float32), "16k", "sample_rate"),
        ({"waveform": torch.zeros(2, 1, 1600) + 0.1, "sample_rate": 16000}, None, "batch of 2"),
        ({"waveform": torch.zeros(1600), "sample_rate": 16000}, None, "batch, channels, samples"),
        ({"samples": torch.zeros(1, 1, 1600)}, None, "AUDIO"),
        ({"waveform": torch.full((1, 1, 1600), float("nan")), "sample_rate": 16000}, None, "NaN/inf"),
        ({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}, None, "empty"),
    ],
)
def test_bad_arrays_and_dicts(source, sample_rate, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match=match):
            load_waveform(source, sample_rate=sample_rate)


def test_clipping_warns():
    with pytest.warns(UserWarning, match="clipped"):
        out = load_waveform(np.full(1600, 2.0, np.float32), sample_rate=16000)
    assert out.max() == pytest.approx(32767 / 32768)


def test_shorter_than_one_frame(encoder):
    short = (0.1 * np.sin(np.arange(600) / 5)).astype(np.float32)  # 37.5 ms < 1/24 s
    with pytest.raises(InputError, match="shorter than one video frame"):
        encode_audio(encoder, short, fps=24, sample_rate=16000)
    with pytest.raises(InputError, match="too short"):
        log_mel(short[:100])
    with pytest.raises(InputError, match="fps"):
        encode_audio(encoder, short, fps=0, sample_rate=16000)


def test_log_mel_rejects_bad_shapes():
    with pytest.raises(InputError, match="1-D"):
        log_mel(np.zeros((2, 1600), np.float32))
    with pytest.raises(InputError, match="float"):
        log_mel(np.zeros(1600, np.int16))
    with pytest.raises(InputError, match="NaN"):
        log_mel(np.full(1600, np.nan, np.float32))
