"""``generate`` rejects bad input with a clear message before loading anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from echomimic_core.__main__ import main
from support.fixtures import official_pose_folder
from support.paths import REPO


# the command line's entry point in a fresh interpreter, then the heavy modules it left in sys.modules
_HELP = """import sys
from echomimic_core.__main__ import main
try:
    main(["generate", "--help"])
except SystemExit as exc:
    code = exc.code
print("heavy:", sorted(m for m in ("torch", "diffusers") if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def test_generate_help_does_not_import_torch():
    """``generate --help`` answers without importing torch (seconds to import on a busy machine)."""
    proc = subprocess.run([sys.executable, "-c", _HELP], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--gestures" in proc.stdout and "{audio,library,still}" in proc.stdout
    assert "heavy: []" in proc.stderr, proc.stderr[-2000:]


@pytest.fixture()
def good(tmp_path, fixtures):
    pose_dir = official_pose_folder(fixtures, tmp_path / "poses")
    return {"--models": str(fixtures / "weights"), "--image": str(fixtures / "pipeline" / "ref_image.png"),
            "--audio": str(fixtures / "audio" / "input.wav"), "--poses": str(pose_dir),
            "--out": str(tmp_path / "out.mp4")}


def _argv(args, **extra):
    merged = {**args, **extra}
    argv = ["generate"]
    for key, value in merged.items():
        argv += [key, value]
    return argv


@pytest.mark.parametrize("extra,needle", [
    ({"--width": "60"}, "multiples of 8"),
    ({"--height": "-8"}, "multiples of 8"),
    ({"--steps": "0"}, "--steps"),
    ({"--max-frames": "0"}, "--max-frames"),
    ({"--fps": "0"}, "--fps"),
    ({"--context-overlap": "12"}, "overlap"),
    ({"--decode-chunk": "0"}, "--decode-chunk"),
    ({"--models": "/nonexistent/models"}, "model folder not found"),
    ({"--audio": "/nonexistent.wav"}, "audio file not found"),
    ({"--poses": "/nonexistent_poses"}, "pose sequence not found"),
])
def test_bad_arguments(good, capsys, extra, needle):
    assert main(_argv(good, **{k: v for k, v in extra.items()})) == 2
    assert needle in capsys.readouterr().err


def test_not_an_image(good, tmp_path, capsys):
    bogus = tmp_path / "ref.png"
    bogus.write_bytes(b"\x00" * 100)
    assert main(_argv(good, **{"--image": str(bogus)})) == 2
    assert "not a readable image" in capsys.readouterr().err


def test_bad_output_name(good, tmp_path, capsys):
    assert main(_argv(good, **{"--out": str(tmp_path / "out.avi")})) == 2
    assert main(_argv(good, **{"--out": str(tmp_path / "no" / "out.mp4")})) == 2
    err = capsys.readouterr().err
    assert ".mp4" in err and "does not exist" in err


def test_not_audio(good, tmp_path, capsys):
    bogus = tmp_path / "speech.wav"
    bogus.write_text("this is not audio")
    assert main(_argv(good, **{"--audio": str(bogus)})) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()


def test_bad_pose_file(good, tmp_path, capsys):
    bogus = tmp_path / "poses.json"
    bogus.write_text("{\"not\": \"poses\"}")
    assert main(_argv(good, **{"--poses": str(bogus)})) == 2
    assert "error:" in capsys.readouterr().err


@pytest.fixture()
def probes(monkeypatch):
    """Counts check_job's two costly checks (the output write-probe, the audio duration probe) and stops
    a render right after its checks (where the model files would be looked at)."""
    import echomimic_core.checkpoints as checkpoints
    import echomimic_core.render as render
    from echomimic_core.errors import InputError

    calls = {"write_probe": 0, "audio_probe": 0}

    def counted(name, real):
        def spy(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return spy

    def stop(*args, **kwargs):
        raise InputError("stopped after the checks")

    monkeypatch.setattr(render, "check_output_path", counted("write_probe", render.check_output_path))
    monkeypatch.setattr(render, "_audio_frames_estimate", counted("audio_probe", render._audio_frames_estimate))
    monkeypatch.setattr(checkpoints, "find_model_files", stop)
    return calls


def test_generate_checks_the_job_once(good, probes, capsys):
    assert main(_argv(good)) == 2
    assert "stopped after the checks" in capsys.readouterr().err
    assert probes == {"write_probe": 1, "audio_probe": 1}


def test_render_video_checks_a_plain_job_itself(good, probes, tmp_path):
    from echomimic_core.errors import InputError
    from echomimic_core.render import RenderJob, check_job, render_video

    job = RenderJob(models=good["--models"], image=good["--image"], audio=good["--audio"], poses=good["--poses"],
                    out=str(tmp_path / "out.avi"))
    with pytest.raises(InputError, match="must end in .mp4"):
        render_video(job)
    job.out = str(tmp_path / "out.mp4")
    with pytest.raises(InputError, match="stopped after the checks"):
        render_video(job)
    assert probes == {"write_probe": 1, "audio_probe": 1}
    checked = check_job(job)
    job.out = str(tmp_path / "unchecked.avi")  # edits after the check do not reach the checked job
    assert checked.job.out == str(tmp_path / "out.mp4") and checked.settings == job.settings.checked()
