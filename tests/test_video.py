"""mp4 writer: streaming, truncation to uint8, audio cut, atomic output."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from echomimic_core.errors import InputError
from echomimic_core.video import VideoWriter, frames_to_uint8, load_audio_samples, probe


def test_uint8_by_truncation_and_layouts():
    x = torch.tensor([0.0, 0.999, 0.5, 1.0, 1.2, -0.1]).view(1, 1, 2, 3).permute(0, 3, 1, 2)  # [1,3,1,2]
    out = frames_to_uint8(x)
    assert out.shape == (1, 1, 2, 3) and out.dtype == np.uint8
    assert out.reshape(-1).tolist() == [0, 254, 127, 255, 255, 0]  # 0.999*255=254.7 -> 254, 0.5*255 -> 127
    hwc = np.full((2, 4, 6, 3), 0.3, np.float32)
    assert frames_to_uint8(hwc).shape == (2, 4, 6, 3) and int(frames_to_uint8(hwc)[0, 0, 0, 0]) == int(0.3 * 255)
    u8 = np.zeros((4, 6, 3), np.uint8)
    assert frames_to_uint8(u8).shape == (1, 4, 6, 3)
    with pytest.raises(InputError):
        frames_to_uint8(np.zeros((2, 4, 6, 5), np.float32))


def _frames(n, h=48, w=64):
    return np.random.default_rng(0).random((n, 3, h, w), dtype=np.float32)


def test_streamed_mp4_with_audio_cut(tmp_path, fixtures):
    out = tmp_path / "clip.mp4"
    with VideoWriter(out, fps=24, audio=fixtures / "audio" / "input.wav") as writer:
        for _ in range(3):
            writer.write(_frames(5))
        assert not out.exists()  # nothing at the target before success
    info = probe(out)
    assert info["video"]["codec"] == "h264" and info["video"]["frames"] == 15
    assert (info["video"]["width"], info["video"]["height"]) == (64, 48)
    assert info["audio"]["codec"] == "aac"
    assert info["audio"]["duration"] == pytest.approx(15 / 24, abs=1e-3)
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 15
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_audio_padded_when_shorter_and_waveform_input(tmp_path):
    wave = np.sin(np.linspace(0, 200, 8000)).astype(np.float32)  # 0.5 s at 16 kHz
    out = tmp_path / "pad.mp4"
    with VideoWriter(out, fps=25, audio=(wave, 16000)) as writer:
        writer.write(_frames(25, 32, 32))  # 1 s of video
    assert probe(out)["audio"]["duration"] == pytest.approx(1.0, abs=1e-3)


def test_failure_leaves_no_file(tmp_path):
    out = tmp_path / "never.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, fps=24) as writer:
            writer.write(_frames(3, 32, 32))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_target_survives_failure(tmp_path):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"old")
    writer = VideoWriter(out, fps=24)
    writer.write(_frames(2, 32, 32))
    writer.abort()
    assert out.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError):
        VideoWriter(tmp_path / "missing" / "x.mp4")
    with pytest.raises(InputError):
        VideoWriter(tmp_path / "x.mp4", audio=tmp_path / "nope.wav")
    not_audio = tmp_path / "text.wav"
    not_audio.write_text("hello")
    with pytest.raises(InputError):
        load_audio_samples(not_audio)
    with pytest.raises(InputError):
        with VideoWriter(tmp_path / "odd.mp4") as writer:
            writer.write(np.zeros((1, 31, 32, 3), np.uint8))
    with pytest.raises(InputError):
        with VideoWriter(tmp_path / "empty.mp4"):
            pass
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".mp4"]


def test_unusual_sample_rate_is_resampled(tmp_path):
    wave = np.stack([np.sin(np.linspace(0, 300, 11000)), np.cos(np.linspace(0, 300, 11000))]).astype(np.float32)
    out = tmp_path / "odd_rate.mp4"
    with VideoWriter(out, fps=24, audio=(wave, 22000)) as writer:  # 22 kHz: not an AAC rate
        writer.write(_frames(12, 32, 32))
    info = probe(out)
    assert info["audio"]["sample_rate"] == 48000 and info["audio"]["channels"] == 2
    assert info["audio"]["duration"] == pytest.approx(0.5, abs=1e-3)
