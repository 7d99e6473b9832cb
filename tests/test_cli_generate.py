"""``python -m echomimic_core generate`` end to end with the tiny fixture weights: a playable mp4 with an
AAC track of the right duration; atomic output on interruption; clear error for missing model files."""

from __future__ import annotations

import shutil

import av
import pytest
import torch

pytest.importorskip("echomimic_core.checkpoints")

from echomimic_core.__main__ import main  # noqa: E402
from echomimic_core.video import probe  # noqa: E402
from support.fixtures import official_pose_folder  # noqa: E402



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, fixtures):
    folder = tmp_path_factory.mktemp("models") / "pretrained_weights"
    shutil.copytree(fixtures / "weights", folder)
    for name in ("denoising_unet", "motion_module"):  # stand-ins for the accelerated weights
        shutil.copy(folder / f"{name}.pth", folder / f"{name}_acc.pth")
    return folder


@pytest.fixture(scope="module")
def pose_dir(tmp_path_factory, fixtures):
    return official_pose_folder(fixtures, tmp_path_factory.mktemp("poses") / "seq")


def _argv(models_dir, pose_dir, fixtures, out, *extra):
    return ["generate", "--models", str(models_dir), "--image", str(fixtures / "pipeline" / "ref_image.png"),
            "--audio", str(fixtures / "audio" / "input.wav"), "--poses", str(pose_dir), "--out", str(out),
            "--width", "64", "--height", "64", "--device", "cpu", "--quiet", *extra]


def _decoded_frames(path):
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.slow
def test_generate_follows_audio_length(models_dir, pose_dir, fixtures, tmp_path):
    out = tmp_path / "talk.mp4"
    assert main(_argv(models_dir, pose_dir, fixtures, out, "--steps", "2", "--seed", "7")) == 0
    info = probe(out)
    with av.open(str(fixtures / "audio" / "input.wav")) as container:
        stream = container.streams.audio[0]
        seconds = sum(f.samples for f in container.decode(stream)) / stream.rate
    frames = int(seconds * 24)  # video length follows the audio; the 3 pose frames are looped to match
    assert info["video"]["codec"] == "h264" and info["video"]["frames"] == frames
    assert (info["video"]["width"], info["video"]["height"]) == (64, 64)
    assert _decoded_frames(out) == frames
    assert info["audio"]["codec"] == "aac"
    assert info["audio"]["duration"] == pytest.approx(frames / 24, abs=2e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4"]


@pytest.mark.slow
def test_generate_acc_preset_with_cap_and_non_square(models_dir, pose_dir, fixtures, tmp_path, capsys):
    out = tmp_path / "acc.mp4"
    assert main(_argv(models_dir, pose_dir, fixtures, out, "--preset", "acc", "--steps", "1",
                      "--max-frames", "10", "--width", "32", "--fps", "25", "--decode-chunk", "4")) == 0
    info = probe(out)
    assert info["video"]["frames"] == 10 and (info["video"]["width"], info["video"]["height"]) == (32, 64)
    assert info["audio"]["duration"] == pytest.approx(10 / 25, abs=2e-3)
    captured = capsys.readouterr()
    assert "aspect" in captured.err  # the square reference was centre-cropped, with a warning
    assert "cfg 1" in captured.out


@pytest.mark.slow
def test_interrupted_run_leaves_nothing(models_dir, pose_dir, fixtures, tmp_path, monkeypatch):
    from echomimic_core import video

    def boom(self, frames):
        raise KeyboardInterrupt

    monkeypatch.setattr(video.VideoWriter, "write", boom)
    out = tmp_path / "never.mp4"
    assert main(_argv(models_dir, pose_dir, fixtures, out, "--steps", "1", "--max-frames", "4")) == 130
    assert list(tmp_path.iterdir()) == []


def test_missing_model_file(models_dir, pose_dir, fixtures, tmp_path, capsys):
    broken = tmp_path / "weights"
    shutil.copytree(models_dir, broken)
    (broken / "pose_encoder.pth").unlink()
    assert main(_argv(broken, pose_dir, fixtures, tmp_path / "x.mp4", "--steps", "1")) == 2
    assert "pose_encoder" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_profile_json_and_speed_flags(models_dir, pose_dir, fixtures, tmp_path, capsys):
    """The per-phase profile contract (bench/vs_official.py reads it) and the speed flags."""
    import json

    out, prof = tmp_path / "p.mp4", tmp_path / "p.json"
    assert main(_argv(models_dir, pose_dir, fixtures, out, "--steps", "1", "--max-frames", "6", "--threads", "1",
                      "--scheduler", "euler", "--window-batch", "2", "--decode-chunk", "3", "--profile",
                      "--profile-json", str(prof))) == 0
    data = json.loads(prof.read_text())
    assert set(data) >= {"phases", "total", "peak_rss_mb", "frames"} and data["frames"] == 6
    assert {"load", "reference", "audio", "poses", "denoise", "decode", "write"} <= set(data["phases"])
    assert abs(sum(data["phases"].values()) - data["total"]) < 0.05 * data["total"] + 0.05
    err = capsys.readouterr().err
    assert "denoise" in err and "peak RSS" in err and "scheduler euler" in err
    assert main(_argv(models_dir, pose_dir, fixtures, tmp_path / "q.mp4", "--steps", "1", "--max-frames", "4",
                      "--plain", "--fast")) == 0
