"""``python -m echomimic_core.eval``: reading mp4s and frame folders, pairing, mismatches, JSON, table."""

from __future__ import annotations

import json
import math
import shutil

import cv2
import numpy as np
import pytest

from echomimic_core.errors import InputError
from echomimic_core.eval import Clip, evaluate, pair_clips
from echomimic_core.eval.__main__ import main
from echomimic_core.video import VideoWriter
from support.eval import moving_frames, tone

pytestmark = pytest.mark.usefixtures("one_thread")


def _mp4(path, frames, audio=None):
    with VideoWriter(path, fps=24, audio=audio, crf=18) as w:
        w.write(frames)
    return path


def _frames_dir(path, frames):
    (path / "frames").mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(path / "frames" / f"{i:06d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (path / "meta.json").write_text(json.dumps({"num_frames": len(frames), "fps": 24, "width": frames.shape[2],
                                                "height": frames.shape[1]}))
    return path


@pytest.fixture()
def folders(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir(), ref.mkdir()
    for i in range(2):
        f = moving_frames(12, seed=i)
        _mp4(ref / f"clip{i}.mp4", f, audio=(tone(0.5), 16000))
        shutil.copy(ref / f"clip{i}.mp4", pred / f"clip{i}.mp4")
    return pred, ref


def test_identical_videos_psnr_inf_ssim_one_via_cli(folders, tmp_path, capsys):
    pred, ref = folders
    out = tmp_path / "m.json"
    assert main(["--pred", str(pred), "--ref", str(ref), "--out", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "PSNR" in table and "SSIM" in table and "clip1" in table and "inf" in table
    data = json.loads(out.read_text())
    assert data["summary"]["psnr"] == "inf" and data["summary"]["ssim"] == pytest.approx(1.0)
    assert set(data["clips"]) == {"clip0", "clip1"} and data["clips"]["clip0"]["frames"] == 12


def test_noisy_prediction_scores_lower(folders):
    pred, ref = folders
    f = moving_frames(12, seed=0)
    noisy = np.clip(f.astype(np.int16) + np.random.default_rng(0).normal(0, 12, f.shape), 0, 255).astype(np.uint8)
    _mp4(pred / "clip0.mp4", noisy)
    r = evaluate(pred, ref, metrics="psnr,ssim")
    assert math.isfinite(r["clips"]["clip0"]["psnr"]) and r["clips"]["clip0"]["psnr"] < 35
    assert r["clips"]["clip0"]["ssim"] < r["clips"]["clip1"]["ssim"]


def test_unpaired_names_are_reported(folders, capsys):
    pred, ref = folders
    (pred / "clip1.mp4").rename(pred / "other.mp4")
    assert main(["--pred", str(pred), "--ref", str(ref), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "only in --pred: ['other']" in err and "only in --ref: ['clip1']" in err
    r = evaluate(pred, ref, allow_unpaired=True)
    assert list(r["clips"]) == ["clip0"]


def test_size_and_length_mismatch(folders, capsys):
    pred, ref = folders
    _mp4(pred / "clip0.mp4", moving_frames(12, h=48, w=64))
    with pytest.raises(InputError, match="prediction is 64x48 but the reference is 64x64"):
        evaluate(pred, ref)
    assert math.isfinite(evaluate(pred, ref, resize=True)["summary"]["ssim"])
    _mp4(pred / "clip0.mp4", moving_frames(10, seed=0))
    r = evaluate(pred, ref)
    assert r["clips"]["clip0"]["frames"] == 10  # trimmed to the shorter clip
    assert main(["--pred", str(pred), "--ref", str(ref), "--no-trim", "--quiet"]) == 2
    assert "prediction has 10 frames, the reference 12" in capsys.readouterr().err


def test_dataset_clip_folder_as_reference(tmp_path):
    f = moving_frames(6, seed=3)
    ref = _frames_dir(tmp_path / "ds" / "clips" / "a", f)
    pred = tmp_path / "pred"
    _frames_dir(pred / "a", f)
    pairs = pair_clips(pred, tmp_path / "ds")
    assert [(p.name, r.name) for p, r in pairs] == [("a", "a")] and pairs[0][1].path == ref
    r = evaluate(pred, tmp_path / "ds")
    assert math.isinf(r["summary"]["psnr"])
    clip = Clip.from_array("mem", f.astype(np.float32) / 255.0 + 0.5 / 255)  # trainer-style float frames
    assert np.array_equal(clip.frames(), f)


def test_missing_backbone_fails_before_reading_videos(folders, tmp_path, capsys):
    pred, ref = folders
    code = main(["--pred", str(pred), "--ref", str(ref), "--metrics", "fid", "--weights", str(tmp_path), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: fid needs 'pt_inception-2015-12-05-6726825d.pth'") and "\n" not in err


def test_unknown_metric_and_bad_weight_flag(folders, capsys):
    pred, ref = folders
    assert main(["--pred", str(pred), "--ref", str(ref), "--metrics", "fidd", "--quiet"]) == 2
    assert main(["--pred", str(pred), "--ref", str(ref), "--weight", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'fidd'" in err and "KIND=PATH" in err


def test_max_frames_and_release(folders):
    pred, ref = folders
    r = evaluate(pred, ref, max_frames=5)
    assert r["clips"]["clip0"]["frames"] == 5 and r["protocol"]["max_frames"] == 5
    clip = Clip.open(ref / "clip0.mp4")
    assert len(clip.frames(4)) == 4 and len(clip.frames()) == 12 and len(clip.frames(3)) == 3
    clip.release()
    assert clip._frames is None and len(clip.frames()) == 12
