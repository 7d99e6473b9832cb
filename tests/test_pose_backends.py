"""The pose-backend registry: names, capabilities, model files searched for in one place."""

from __future__ import annotations

import pytest

from echomimic_core.errors import ConfigError, ModelFilesNotFoundError
from echomimic_core.pose import DET_FILE, POSE_FILE, backend_names, create_extractor, find_dwpose_files, get_backend
from echomimic_core.pose.backends import PoseBackend, register_backend


def test_builtin_backends_and_capabilities():
    assert backend_names()[0] == "mediapipe" and "dwpose" in backend_names()
    dw = get_backend("dwpose")
    assert dw.model_files == (DET_FILE, POSE_FILE) and {"body", "hands", "face"} <= dw.capabilities
    assert get_backend("mediapipe").model_files == ()
    with pytest.raises(ConfigError, match="dwpose"):
        get_backend("openpose")


def test_dwpose_files_found_once_in_the_listed_roots(tmp_path):
    root = tmp_path / "models"
    with pytest.raises(ModelFilesNotFoundError) as err:
        create_extractor("dwpose", models_roots=[root])
    msg = str(err.value)
    assert DET_FILE in msg and POSE_FILE in msg and str(root / "echomimic_v2" / "dwpose") in msg
    folder = root / "dwpose"
    folder.mkdir(parents=True)
    for name in (DET_FILE, POSE_FILE):
        (folder / name).write_bytes(b"x")
    assert get_backend("dwpose").find_files(models_roots=[root]) == (folder / DET_FILE, folder / POSE_FILE)
    assert find_dwpose_files(models_root=root) == (folder / DET_FILE, folder / POSE_FILE)


def test_register_a_backend(tmp_path, monkeypatch):
    from echomimic_core.pose import backends

    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))  # leave the real registry as it was
    calls = []
    spec = PoseBackend(name="test_fake", description="", capabilities=frozenset({"hands"}), model_files=("m.bin",),
                       package="-", factory=lambda files: calls.append(files) or (lambda img: {}))
    register_backend(spec)
    (tmp_path / "m.bin").write_bytes(b"x")
    extractor = create_extractor("test_fake", model_dir=tmp_path)
    assert extractor(None) == {} and calls == [(tmp_path / "m.bin",)]
    with pytest.raises(ConfigError, match="capabilities"):
        register_backend(PoseBackend("bad", "", frozenset({"tail"}), (), "-", lambda f: None))


def test_pose_arrays_round_trip_through_the_sequence():
    import numpy as np

    from echomimic_core.errors import InputError
    from echomimic_core.pose import PoseArrays, PoseSequence

    rng = np.random.default_rng(0)
    arr = PoseArrays.empty(3)
    arr.bodies[:] = rng.uniform(0.1, 0.9, arr.bodies.shape)
    arr.bodies_score[:] = 0.9
    arr.bodies_score[1, 4] = 0.0  # a missed point
    arr.hands[:] = rng.uniform(0.1, 0.9, arr.hands.shape)
    arr.hands_score[:] = 0.8
    arr.faces[:] = rng.uniform(0.1, 0.9, arr.faces.shape)
    arr.faces_score[:] = 0.7
    seq = PoseSequence.from_arrays(arr, fps=25.0)
    assert len(seq) == 3 and seq.fps == 25.0
    back = seq.to_arrays()
    for k, v in arr.as_dict().items():
        expect = v.copy()
        if k == "bodies":
            expect[1, 4] = -1.0  # not in the subset: missing after the round trip
        np.testing.assert_allclose(back.as_dict()[k], expect, atol=1e-6, err_msg=k)
    with pytest.raises(InputError, match="hands"):
        PoseArrays.from_dict(dict(arr.as_dict(), hands=np.zeros((3, 21, 2))))
