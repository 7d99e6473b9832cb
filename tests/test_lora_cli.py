"""`generate --lora FILE[:STRENGTH]` (repeatable) with the tiny fixture weights: strength 0 gives the
base video's frames exactly, strength 1 changes them, bad or foreign LoRAs fail with one `error:` line."""

from __future__ import annotations

import shutil

import av
import numpy as np
import pytest
import torch

from echomimic_core.__main__ import main
from echomimic_core.lora import save_lora
from support.lora import random_lora

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, fixtures):
    from echomimic_core.checkpoints import load_models

    root = tmp_path_factory.mktemp("lora_cli")
    poses = root / "poses"
    poses.mkdir()
    for k in range(3):
        shutil.copy(fixtures / "pose_drawing" / f"01_{k}.npy", poses / f"{k}.npy")
    models = load_models(fixtures / "weights")
    good = save_lora(root / "good.safetensors", random_lora(models, 11))
    other = random_lora(models, 12)
    other.fingerprint = type(other.fingerprint)(other.fingerprint.structure, "ab" * 32,
                                                other.fingerprint.samples * 1.5, torch.float32)
    foreign = save_lora(root / "foreign.safetensors", other)
    return root, poses, good, foreign


def _run(fixtures, poses, out, *extra):
    return main(["generate", "--models", str(fixtures / "weights"), "--image",
                 str(fixtures / "pipeline" / "ref_image.png"), "--audio", str(fixtures / "audio" / "input.wav"),
                 "--poses", str(poses), "--out", str(out), "--width", "64", "--height", "64", "--device", "cpu",
                 "--quiet", "--steps", "2", "--max-frames", "4", "--seed", "1", *extra])


def _frames(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_generate_lora_strength(setup, fixtures, tmp_path, monkeypatch):
    """The frames the CLI hands to the video writer are compared, not the decoded mp4s: libx264 is not
    bit-reproducible here for these 64x64 clips (the same uint8 frames measured to encode to two different
    streams from run to run, with and without encoder threads), so mp4 equality would test the encoder."""
    import echomimic_core.video as video

    written = {}
    real_write = video.VideoWriter.write

    def recording_write(self, frames):
        written.setdefault(self.path.name, []).append(video.frames_to_uint8(frames).copy())
        return real_write(self, frames)

    monkeypatch.setattr(video.VideoWriter, "write", recording_write)
    _, poses, good, _ = setup
    assert _run(fixtures, poses, tmp_path / "base.mp4") == 0
    assert _run(fixtures, poses, tmp_path / "zero.mp4", "--lora", f"{good}:0") == 0
    assert _run(fixtures, poses, tmp_path / "one.mp4", "--lora", str(good), "--lora", f"{good}:0.5") == 0
    base, zero, one = (np.concatenate(written[f"{name}.mp4"]) for name in ("base", "zero", "one"))
    assert base.shape[0] == 4 and np.array_equal(zero, base)
    assert np.abs(one.astype(int) - base).max() > 0
    assert _frames(tmp_path / "zero.mp4").shape == _frames(tmp_path / "base.mp4").shape == base.shape


def test_generate_lora_errors_are_one_line(setup, fixtures, tmp_path, capsys):
    _, poses, _, foreign = setup
    assert _run(fixtures, poses, tmp_path / "x.mp4", "--lora", str(tmp_path / "missing.safetensors")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: LoRA file not found") and err.count("\n") == 1
    assert _run(fixtures, poses, tmp_path / "y.mp4", "--lora", f"{foreign}:0.7") == 2
    err = capsys.readouterr().err
    assert "error: LoRA foreign.safetensors was trained for base model abababababab" in err and err.count("\n") == 1
    assert not (tmp_path / "y.mp4").exists()
