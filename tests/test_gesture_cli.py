"""``generate`` without ``--poses``: image + audio only, with the embedded demo model and the embedded gesture
model (audio gestures on the average body when no person is detected; still hands and library from a
reference pose file)."""

from __future__ import annotations

import pytest

from support.paths import REPO
from echomimic_core.__main__ import main
from echomimic_core.video import probe

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]
ASSETS = REPO / "echomimic_core" / "assets"


def _argv(out, *extra):
    return ["generate", "--models", str(ASSETS / "demo_model"), "--image", str(ASSETS / "demo" / "reference.png"),
            "--audio", str(ASSETS / "demo" / "audio.wav"), "--out", str(out), "--width", "64", "--height", "64",
            "--steps", "2", "--max-frames", "12", "--device", "cpu", "--quiet", *extra]


@pytest.mark.parametrize("extra", [
    (),  # no person detectable in the cartoon: the average body layout, with a warning
    ("--gestures", "still", "--reference-pose", str(ASSETS / "demo" / "poses.npz")),
    ("--gestures", "library", "--pose-library", str(ASSETS / "demo" / "poses.npz"),
     "--reference-pose", str(ASSETS / "demo" / "poses.npz")),
    ("--gesture-seed", "5", "--motion-amount", "0.5", "--reference-pose", str(ASSETS / "demo" / "poses.npz")),
])
def test_generate_from_image_and_audio_only(tmp_path, extra):
    out = tmp_path / "talk.mp4"
    assert main(_argv(out, *extra)) == 0
    assert probe(out)["video"]["frames"] == 12


def test_library_mode_without_library_fails_clearly(tmp_path, capsys):
    assert main(_argv(tmp_path / "x.mp4", "--gestures", "library")) == 2
    assert "--pose-library" in capsys.readouterr().err
