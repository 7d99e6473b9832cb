"""bench/emtd.py: the EMTD list format, segment cutting, dataset poses -> pose file, the paper table."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from echomimic_core.errors import InputError
from echomimic_core.eval import paper_table
from echomimic_core.video import VideoWriter, probe
from support.eval import moving_frames, tone

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import emtd  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

LIST = """URL,Start Timecode,End Timecode
https://www.youtube.com/watch?v=abcDEF12345,00:00:01.000,00:00:02.500
https://www.youtube.com/watch?v=-Hmn5Gmn2dw,00:01:02.250,00:01:05.000
"""


def test_read_emtd_list(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(LIST)
    segs = emtd.read_emtd_list(path)
    assert [s.name for s in segs] == ["000_abcDEF12345", "001_-Hmn5Gmn2dw"]
    assert segs[1].start == pytest.approx(62.25) and segs[1].end == pytest.approx(65.0)
    assert emtd.parse_timecode("00:08:43.042") == pytest.approx(523.042)
    path.write_text("url,start\nx,1\n")
    with pytest.raises(InputError, match="not an EMTD list"):
        emtd.read_emtd_list(path)


def test_cut_segment_trims_three_frames_and_keeps_audio(tmp_path):
    src = tmp_path / "abcDEF12345.mp4"
    with VideoWriter(src, fps=25, audio=(tone(3.0), 16000)) as w:
        w.write(moving_frames(75, h=48, w=64))  # 3 s at 25 fps
    seg = emtd.read_emtd_list(_write(tmp_path / "l.txt", LIST))[0]  # 1.0 s .. 2.5 s
    assert emtd.find_source(tmp_path, seg.video_id) == src
    out = emtd.cut_segment(src, seg, tmp_path / f"{seg.name}.mp4")
    info = probe(out)
    # frames with t in [1.0 + 3/25, 2.5 - 3/25): 1.12 .. 2.36 -> 32 frames at 25 fps
    assert info["video"]["frames"] == 32 and info["video"]["fps"] == pytest.approx(25.0)
    assert info["audio"] is not None and info["audio"]["duration"] == pytest.approx(32 / 25, abs=0.05)


def _write(path, text):
    path.write_text(text)
    return path


def test_clip_poses_round_trip(tmp_path):
    from echomimic_core.pose import load_pose_sequence

    F = 3
    kp = {"bodies": np.full((F, 18, 2), 0.5, np.float32), "bodies_score": np.full((F, 18), 0.9, np.float32),
          "hands": np.full((F, 2, 21, 2), 0.3, np.float32), "hands_score": np.full((F, 2, 21), 0.7, np.float32),
          "faces": np.full((F, 68, 2), 0.2, np.float32), "faces_score": np.ones((F, 68), np.float32)}
    kp["bodies_score"][:, 10:] = 0.0  # legs missing
    np.savez(tmp_path / "keypoints.npz", **kp)
    seq = load_pose_sequence(emtd.clip_poses(tmp_path, tmp_path / "poses.npz"))
    assert len(seq) == F and tuple(seq.draw_params) == (768, 768, 0, 768, 0, 768)
    fr = seq[1]
    np.testing.assert_allclose(fr["hands"], kp["hands"][1], atol=1e-6)
    assert list(fr["bodies"]["subset"][0][:10]) == list(range(10)) and fr["bodies"]["subset"][0][10] == -1


def test_paper_table_layout():
    text = paper_table({"ours": {"fid": 1.0, "psnr": 20.0, "hkc": float("nan")}})
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["Methods", "FID↓", "FVD↓", "SSIM↑"] and lines[0].split()[-1] == "CSIM↑"
    assert lines[3].startswith("EchoMimicV2 (paper)") and "49.33" in lines[3] and "0.558" in lines[3]
    assert lines[-1].startswith("ours") and "1.00" in lines[-1] and "-" in lines[-1]


def test_prepare_shells_to_train_preprocess(tmp_path, monkeypatch):
    src_dir = tmp_path / "videos"
    src_dir.mkdir()
    with VideoWriter(src_dir / "abcDEF12345.mp4", fps=25, audio=(tone(3.0), 16000)) as w:
        w.write(moving_frames(75, h=48, w=64))
    calls = []
    monkeypatch.setattr(emtd.subprocess, "call", lambda cmd, **kw: calls.append(cmd) or 0)
    code = emtd.main(["prepare", "--list", str(_write(tmp_path / "l.txt", LIST)), "--videos", str(src_dir),
                      "--out", str(tmp_path / "data"), "--pose", "mediapipe"])
    assert code == 0 and (tmp_path / "data" / "_cuts" / "000_abcDEF12345.mp4").is_file()
    cmd = calls[0]
    assert cmd[1].endswith("train/preprocess.py") and cmd[2].endswith("_cuts") and "--bottom-margin" in cmd
