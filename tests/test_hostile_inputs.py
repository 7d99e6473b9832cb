"""Hostile and broken inputs: termination signals mid-write, NaN audio, unusable output paths, long clips
behind short videos. Each must end in one clear error (or a clean exit code) with nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from echomimic_core.audio import encode_audio, load_audio_encoder, load_waveform
from echomimic_core.audio.windows import audio_span_samples
from echomimic_core.errors import InputError
from echomimic_core.signals import Terminated, termination_as_exception
from train.dataset_format import write_wav  # the project's one 16-bit wav writer
from echomimic_core.video import AudioTrack, VideoWriter, check_output_path, estimate_mp4_bytes, probe

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _write_float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """A 32-bit IEEE-float wav (format tag 3), which may carry NaN/inf."""
    data = samples.astype("<f4").tobytes()
    fmt = (b"fmt " + (16).to_bytes(4, "little") + (3).to_bytes(2, "little") + (1).to_bytes(2, "little")
           + rate.to_bytes(4, "little") + (rate * 4).to_bytes(4, "little") + (4).to_bytes(2, "little")
           + (32).to_bytes(2, "little"))
    body = b"WAVE" + fmt + b"data" + len(data).to_bytes(4, "little") + data
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    return path


def _speechlike(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * envelope * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


# -- signals -------------------------------------------------------------------------------------------
_WRITER_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from echomimic_core.signals import Terminated, termination_as_exception
    from echomimic_core.video import VideoWriter
    out = sys.argv[1]
    with termination_as_exception():
        try:
            with VideoWriter(out, fps=24) as writer:
                writer.write(np.zeros((2, 32, 32, 3), np.uint8))
                print("writing", flush=True)
                while True:
                    writer.write(np.zeros((1, 32, 32, 3), np.uint8))
                    time.sleep(0.01)
        except Terminated as exc:
            print(exc, file=sys.stderr)
            sys.exit(exc.exit_code)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_termination_signal_mid_write_leaves_no_file(tmp_path, signum):
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER_SCRIPT, str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert f"terminated by {signal.Signals(signum).name}" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_reports_143_on_sigterm(tmp_path):
    """`python -m echomimic_core` turns SIGTERM into exit code 143 with one line, no traceback."""
    script = textwrap.dedent("""
        import os, signal, sys
        from echomimic_core import __main__ as cli
        from echomimic_core.commands import check
        check.run = lambda args: os.kill(os.getpid(), signal.SIGTERM) or 0
        sys.exit(cli.main(["check"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143
    assert proc.stderr.strip() == "terminated by SIGTERM; no output written"


def test_handlers_restored_and_second_signal_ignored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as info:
        with termination_as_exception():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:  # a second signal during cleanup must not interrupt the cleanup
                os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before


# -- output paths --------------------------------------------------------------------------------------
def test_output_path_checks(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        check_output_path(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.mp4")
    with pytest.raises(InputError, match="shorter name"):
        check_output_path(tmp_path / ("x" * 300 + ".mp4"))
    with pytest.raises(InputError, match="cannot write"):  # fits, but the temporary name would not
        check_output_path(tmp_path / ("x" * 240 + ".mp4"))
    existing = tmp_path / "old.mp4"
    existing.write_bytes(b"old")
    with pytest.raises(InputError, match="already exists"):
        check_output_path(existing, overwrite=False)
    assert check_output_path(existing) == existing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.mp4"]  # the write probe is gone


def test_read_only_output_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK) and os.geteuid() == 0:
            pytest.skip("running as root: a mode-0500 folder stays writable")
        with pytest.raises(InputError, match="cannot write"):
            VideoWriter(folder / "x.mp4")
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


@pytest.fixture
def tiny_mount(tmp_path):
    """A small tmpfs (root and mount rights needed; skipped elsewhere)."""
    mounted = []

    def make(options: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", str(point)], capture_output=True)


def test_read_only_file_system(tiny_mount):
    folder = tiny_mount("size=64k,ro")
    with pytest.raises(InputError, match="cannot write"):
        VideoWriter(folder / "x.mp4")


def test_full_disk_found_before_and_during_the_run(tiny_mount):
    folder = tiny_mount("size=256k")
    with pytest.raises(InputError, match="MiB free"):
        check_output_path(folder / "x.mp4", min_free_bytes=estimate_mp4_bytes(120, 768, 768))
    noise = np.random.default_rng(0).integers(0, 256, (8, 128, 128, 3), dtype=np.uint8)
    with pytest.raises(InputError, match="writing .* failed"):
        with VideoWriter(folder / "x.mp4", fps=24) as writer:
            for _ in range(200):
                writer.write(noise)
    assert list(folder.iterdir()) == []


# -- audio ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_float_wav_is_refused_early(tmp_path, bad):
    samples = _speechlike(0.5)
    samples[1234] = bad
    path = _write_float_wav(tmp_path / "bad.wav", samples)
    with pytest.raises(InputError, match="NaN/inf"):
        load_waveform(path)
    with pytest.raises(InputError, match="NaN/inf"):  # and the muxer, should it get such a file
        list(AudioTrack(path).blocks())


def test_mux_decodes_only_what_the_video_needs(tmp_path):
    path = tmp_path / "long.wav"
    write_wav(path, _speechlike(20.0))
    track = AudioTrack(path)
    seen = []
    for block in track.blocks(16000 // 2):
        seen.append(block.shape[1])
    assert sum(seen) == 8000 and len(seen) < 20  # of ~310 blocks in the file: decoding stopped early
    out = tmp_path / "short.mp4"
    with VideoWriter(out, fps=24, audio=path) as writer:
        writer.write(np.zeros((12, 32, 32, 3), np.uint8))
    assert probe(out)["audio"]["duration"] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.slow
def test_bounded_decode_gives_the_whole_clips_features(tmp_path, fixtures):
    """A 40 s clip behind a 24-frame video: only the first 30 s segment (+ margin) is decoded, and the
    chunks of those frames equal the ones computed from the whole clip (the loudest part is in the span,
    so even the log-mel floor agrees)."""
    samples = _speechlike(40.0)
    samples[16000 * 31:] *= 0.5
    path = tmp_path / "long.wav"
    write_wav(path, samples)
    encoder = load_audio_encoder(fixtures / "weights" / "audio_processor" / "tiny.pt", dtype=torch.float32)
    span = audio_span_samples(24, 24)
    assert span == 30 * 16000 + 1600
    assert load_waveform(path, max_samples=span).shape == (span,)
    full = encode_audio(encoder, path, fps=24)
    part = encode_audio(encoder, path, fps=24, max_frames=24)
    assert part.waveform.shape[0] == span and part.num_chunks < full.num_chunks
    assert torch.equal(part.frames(24), full.frames(24))
    # a frame near the end of the kept segment still reads whole-clip features
    late = encode_audio(encoder, path, fps=24, max_frames=700)
    assert torch.equal(late.frames(700), full.frames(700))


def test_bounded_array_decode_matches_prefix():
    samples = _speechlike(3.0, rate=44100)
    whole = load_waveform(samples, sample_rate=44100)
    part = load_waveform(samples, sample_rate=44100, max_samples=16000)
    assert part.shape == (16000,)
    np.testing.assert_array_equal(part, whole[:16000])
    with pytest.raises(InputError, match="max_samples"):
        load_waveform(samples, sample_rate=44100, max_samples=0)


# -- poses ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["NAN", "INF", 1e12])
def test_damaged_pose_coordinates_fail_before_drawing(value):
    from echomimic_core.pose import empty_frame, normalize_frame

    frame = empty_frame(1)
    frame["hands"][0, 3, 1] = {"NAN": np.nan, "INF": np.inf}.get(value, value)
    with pytest.raises(InputError, match="'hands' holds non-finite or absurd values"):
        normalize_frame(frame)
    frame = empty_frame(1)
    frame["hands_score"][1, 0] = np.nan
    with pytest.raises(InputError, match="hands_score"):
        normalize_frame(frame)


@pytest.mark.parametrize("ref_w", [0, -800, 10**9, 12.5, "wide"])
def test_bad_drawing_canvas_is_refused(ref_w):
    from echomimic_core.pose import PoseSequence, empty_frame

    with pytest.raises(InputError, match="ref_w"):
        PoseSequence([empty_frame(1)], ref_w=ref_w)


def test_damaged_pose_file_metadata(tmp_path):
    from echomimic_core.pose import PoseSequence, empty_frame, load_pose_sequence, save_pose_sequence

    path = save_pose_sequence(PoseSequence.from_frames([empty_frame(1)] * 2), tmp_path / "poses.json")
    import json

    data = json.loads(path.read_text())
    meta = data["meta"] if "meta" in data else data
    for key, bad in (("ref_w", 0), ("fps", "fast"), ("fps", -1)):
        broken = json.loads(json.dumps(data))
        (broken["meta"] if "meta" in broken else broken)[key] = bad
        path.write_text(json.dumps(broken))
        with pytest.raises(InputError):
            load_pose_sequence(path)
    assert "ref_w" in meta


# -- trainer config ------------------------------------------------------------------------------------
def test_misspelt_override_is_refused_with_the_close_match():
    from train.phases import load_config

    with pytest.raises(ValueError, match=r"unknown config key optim\.lrr; did you mean optim\.lr\?"):
        load_config("demo_stage1", ["optim.lrr=5"])
    with pytest.raises(ValueError, match="is a value, not a section"):
        load_config("demo_stage1", ["optim.lr.x=5"])
    assert load_config("demo_stage1", ["optim.lr=5"])["optim"]["lr"] == 5


def test_trainer_cli_bad_config_is_one_line(capsys):
    from train.apdh import main

    assert main(["demo_stage1", "--set", "optim.lrr=5", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key optim.lrr") and "\n" not in err
    assert main(["no_such_config"]) == 2


# -- folders -------------------------------------------------------------------------------------------
def test_symlink_loops_are_walked_once(tmp_path):
    from echomimic_core.files import walk_folder

    root = tmp_path / "models"
    (root / "fp16").mkdir(parents=True)
    (root / "reference_unet.pth").write_bytes(b"x")
    (root / "fp16" / "back").symlink_to(root)          # two links to itself, one level apart
    (root / "self").symlink_to(root)
    (root / "deep" / "a" / "b" / "c" / "d" / "e" / "f" / "g").mkdir(parents=True)
    visited = [Path(d).relative_to(root).as_posix() for d, _, _ in walk_folder(root)]
    assert visited[0] == "." and len(visited) == len(set(visited))
    assert "self" not in visited and "fp16/back" not in visited  # the same real folder as the root
    assert "deep/a/b/c/d/e" in visited and "deep/a/b/c/d/e/f" not in visited  # depth capped
