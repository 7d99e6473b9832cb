"""Pose files: safe loading of the official pickled .npy, our .npz/.json format, official folder export."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from echomimic_core.errors import InputError
from echomimic_core.pose import (PoseSequence, draw_hands, load_pose_sequence, render_frames, safe_load_npy,
                                 save_pose_sequence)


class _Evil:
    """Pickles as a call to os.system that would create a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilWrite:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _npy_bytes(obj) -> bytes:
    """The exact .npy layout np.save uses for a 0-d object array, built without np.save's checks."""
    from numpy.lib import format as npy_format
    import io

    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    arr = np.empty((), dtype=object)
    arr[()] = obj
    pickle.dump(arr, buf, protocol=3)
    return buf.getvalue()


@pytest.mark.parametrize("make", [
    lambda m: _Evil(m),                                            # the whole payload is the exploit
    lambda m: {"bodies": {}, "hands": np.zeros((2, 21, 2)), "num": _Evil(m)},  # hidden inside the dict
    lambda m: [_EvilWrite(m)],
])
def test_malicious_npy_is_refused_without_running(tmp_path: Path, make):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "0.npy"
    path.write_bytes(_npy_bytes(make(marker)))
    with pytest.raises(InputError, match="refusing"):
        safe_load_npy(path)
    assert not marker.exists()
    # also through the folder loader
    with pytest.raises(InputError, match="refusing"):
        load_pose_sequence(tmp_path)
    assert not marker.exists()


def test_raw_pickle_globals_refused(tmp_path: Path):
    from echomimic_core.pose.safe_load import safe_unpickle

    marker = tmp_path / "m"
    with pytest.raises(InputError):
        safe_unpickle(pickle.dumps(_Evil(marker)))
    with pytest.raises(InputError):
        safe_unpickle(pickle.dumps(eval))  # a bare global
    with pytest.raises(InputError):
        safe_unpickle(b"\x80\x03garbage")
    assert not marker.exists()
    # numpy arrays, scalars and plain containers are fine
    obj = {"a": np.arange(3.0), "b": [1, 2.5, "x", None, True], "c": np.float64(2.0), "d": (1, 2)}
    back = safe_unpickle(pickle.dumps(obj, protocol=3))
    assert np.array_equal(back["a"], obj["a"]) and back["b"] == obj["b"] and back["c"] == 2.0


def test_safe_load_equals_numpy_load(media: Path):
    path = media / "pose" / "01" / "7.npy"
    ours = safe_load_npy(path)
    ref = np.load(path, allow_pickle=True).item()  # trusted shared file
    assert ours.keys() == ref.keys()
    for k in ("hands", "hands_score", "faces", "faces_score"):
        assert np.array_equal(ours[k], ref[k])
    for k in ("candidate", "subset", "score"):
        assert np.array_equal(ours["bodies"][k], ref["bodies"][k])
    assert ours["num"] == 7 and ours["draw_pose_params"] == [768, 768, 0, 768, 0, 768]


def test_load_official_folder(media: Path):
    seq = load_pose_sequence(media / "pose" / "01")
    assert len(seq) == 48 and seq.draw_params == (768, 768, 0, 768, 0, 768) and seq.fps == 24
    assert [f["num"] for f in seq.frames] == list(range(48))  # numeric order, not 0, 1, 10, 11, ...
    sub = seq.select([3, 1])
    assert len(sub) == 2 and sub[0] is seq[3]


@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_round_trip_our_format_draws_identically(media: Path, tmp_path: Path, suffix: str):
    seq = load_pose_sequence(media / "pose" / "fight")
    path = save_pose_sequence(seq, tmp_path / f"fight{suffix}")
    back = load_pose_sequence(path)
    assert len(back) == len(seq) and back.draw_params == seq.draw_params and back.fps == seq.fps
    for a, b in zip(seq.frames, back.frames):
        assert a.get("num") == b.get("num")
        for k in ("hands", "hands_score", "faces", "faces_score"):
            assert np.array_equal(a[k], b[k])
        for k in ("candidate", "subset", "score"):
            assert np.array_equal(a["bodies"][k], b["bodies"][k])
    idx = [0, 17, 47]
    assert np.array_equal(render_frames(seq, idx, 768, 768), render_frames(back, idx, 768, 768))
    assert np.array_equal(render_frames(seq, idx, 64, 64), render_frames(back, idx, 64, 64))


def test_official_folder_export_round_trip(media: Path, tmp_path: Path):
    seq = load_pose_sequence(media / "pose" / "01").select(range(5))
    seq.frames[2] = dict(seq.frames[2], draw_pose_params=[768, 500, 0, 768, 134, 634])  # per-frame params
    out = save_pose_sequence(seq, tmp_path / "exported")
    assert sorted(p.name for p in out.iterdir()) == [f"{k}.npy" for k in range(5)]
    # readable by the official loader call (np.load allow_pickle on our own trusted output)
    d = np.load(out / "2.npy", allow_pickle=True).item()
    assert d["num"] == 2 and d["draw_pose_params"] == [768, 500, 0, 768, 134, 634]
    assert np.load(out / "0.npy", allow_pickle=True).item()["draw_pose_params"] == [768, 768, 0, 768, 0, 768]
    back = load_pose_sequence(out)
    assert back.frame_draw_params(2) == (768, 500, 0, 768, 134, 634)
    assert back.frame_draw_params(0) == (768, 768, 0, 768, 0, 768)
    for k in range(5):
        assert np.array_equal(draw_hands(back[k], 768, 768, back.frame_draw_params(k)),
                              draw_hands(seq[k], 768, 768, seq.frame_draw_params(k)))
    # per-frame params survive our format too
    again = load_pose_sequence(save_pose_sequence(back, tmp_path / "x.npz"))
    assert again.frame_draw_params(2) == (768, 500, 0, 768, 134, 634)
    # re-export with fewer frames leaves no stale files
    save_pose_sequence(seq.select([0, 1]), out)
    assert sorted(p.name for p in out.iterdir()) == ["0.npy", "1.npy"]


def test_bad_files(tmp_path: Path, media: Path):
    with pytest.raises(InputError):
        load_pose_sequence(tmp_path / "missing")
    (tmp_path / "a.json").write_text('{"format": "something else"}')
    with pytest.raises(InputError, match="not an EchoMimicV2 pose"):
        load_pose_sequence(tmp_path / "a.json")
    seq = load_pose_sequence(media / "pose" / "01").select([0])
    p = save_pose_sequence(seq, tmp_path / "v.json")
    p.write_text(p.read_text().replace('"version":1', '"version":99'))
    with pytest.raises(InputError, match="version"):
        load_pose_sequence(p)
    folder = tmp_path / "bad"
    folder.mkdir()
    shutil.copy(media / "pose" / "01" / "0.npy", folder / "frame_a.npy")
    with pytest.raises(InputError, match="not named"):
        load_pose_sequence(folder)
    np.save(folder / "frame_a.npy", np.zeros(3))
    (folder / "frame_a.npy").rename(folder / "0.npy")
    with pytest.raises(InputError, match="does not hold a pose dict"):
        load_pose_sequence(folder)
    with pytest.raises(InputError):
        PoseSequence([], draw_params=[1, 2, 3])
