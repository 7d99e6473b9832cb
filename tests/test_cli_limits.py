"""`generate` refuses bad requests with one line before any model loads, bounds its memory by the work
asked for, and never writes a video made of NaN."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from echomimic_core.__main__ import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    """A speech-like tone, written a minute at a time (a half-hour clip never sits in memory)."""
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        total = int(seconds * rate)
        for start in range(0, total, 60 * rate):
            t = np.arange(start, min(total, start + 60 * rate)) / rate
            samples = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
            f.writeframes(np.rint(samples * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, fixtures):
    from PIL import Image

    from echomimic_core.pose import PoseSequence, empty_frame, save_pose_sequence

    root = tmp_path_factory.mktemp("inputs")
    image = root / "ref.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    frame = empty_frame(1)
    frame["hands"][:] = 0.5
    frame["hands_score"][:] = 0.9
    poses = save_pose_sequence(PoseSequence.from_frames([frame] * 3), root / "poses.json")
    return {"models": fixtures / "weights", "image": image, "poses": poses, "audio": _wav(root / "speech.wav", 1.0)}


def _argv(inputs, out, *extra, audio=None):
    return ["generate", "--models", str(inputs["models"]), "--image", str(inputs["image"]),
            "--audio", str(audio or inputs["audio"]), "--poses", str(inputs["poses"]), "--out", str(out),
            "--width", "64", "--height", "64", "--device", "cpu", "--quiet", "--steps", "1", *extra]


@pytest.mark.parametrize("extra, message", [
    (("--fps", "100000"), "--fps"), (("--width", "100000"), "at most"), (("--cfg", "1e30"), "--cfg"),
    (("--device", "cuda"), "no CUDA GPU" if not torch.cuda.is_available() else None),
])
def test_absurd_requests_fail_before_loading(inputs, tmp_path, capsys, monkeypatch, extra, message):
    if message is None:
        pytest.skip("a CUDA GPU is visible")
    from echomimic_core import checkpoints

    monkeypatch.setattr(checkpoints, "load_models", lambda *a, **k: pytest.fail("models loaded"))
    assert main(_argv(inputs, tmp_path / "x.mp4", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(inputs, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    assert main(_argv(inputs, out, "--max-frames", "2")) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(_argv(inputs, out, "--max-frames", "2", "--overwrite")) == 0
    assert out.stat().st_size > 1000 and sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_nan_weights_stop_with_one_line_and_no_file(inputs, tmp_path, capsys):
    broken = tmp_path / "weights"
    shutil.copytree(inputs["models"], broken)
    target = broken / "denoising_unet.pth"
    state = torch.load(target, map_location="cpu", weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point() and "conv_in" in k)
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save(state, target)
    out = tmp_path / "out" / "nan.mp4"
    out.parent.mkdir()
    assert main(_argv({**inputs, "models": broken}, out, "--max-frames", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: denoising step 1/1 produced NaN/inf")
    assert list(out.parent.iterdir()) == []


# VmHWM of the child's own address space (ru_maxrss would carry the parent's peak across exec)
_PEAK = """
import sys
from echomimic_core.__main__ import main
code = main(sys.argv[1:])
peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(peak, code)
"""


@pytest.mark.slow
def test_long_clip_with_few_frames_costs_a_short_clips_memory(inputs, tmp_path):
    """A 30-minute clip with --max-frames 4 peaks within 1.3x of a 3-second clip (each in a fresh process)."""
    peaks = {}
    for name, seconds in (("short", 3.0), ("long", 1800.0)):
        audio = _wav(tmp_path / f"{name}.wav", seconds)
        argv = _argv(inputs, tmp_path / f"{name}.mp4", "--max-frames", "4", "--threads", "1", audio=audio)
        proc = subprocess.run([sys.executable, "-c", _PEAK, *argv], cwd=REPO, capture_output=True, text=True,
                              timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr
        peak_kb, code = proc.stdout.split()[-2:]
        assert code == "0", proc.stderr
        peaks[name] = int(peak_kb) / 1024
    assert peaks["long"] <= 1.3 * peaks["short"], peaks


def test_silence_is_one_warning_line(inputs, tmp_path, capsys):
    silent = tmp_path / "silent.wav"
    with wave.open(str(silent), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(np.zeros(16000, "<i2").tobytes())
    assert main(_argv(inputs, tmp_path / "s.mp4", "--max-frames", "2", audio=silent)) == 0
    err = capsys.readouterr().err
    assert err.count("is silent") == 1 and "warning: audio file" in err and "UserWarning" not in err


def test_check_offers_the_safetensors_conversion(fixtures, capsys):
    from echomimic_core.commands.check import report_folder

    assert report_folder(fixtures / "weights", load=True) == 0
    out = capsys.readouterr().out
    assert "loads OK" in out and f"python -m echomimic_core.convert {fixtures / 'weights'}" in out
