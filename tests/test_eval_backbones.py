"""FID / FVD / E-FID / CSIM / LPIPS code paths with random TEST backbones; weight loading; missing files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from echomimic_core.errors import CheckpointError, ModelFilesNotFoundError
from echomimic_core.eval import BACKBONES, Clip, Evaluator, format_table
from echomimic_core.eval.backbones import load_backbone
from echomimic_core.eval.weights import find_weight
from support.eval import ConstructedPoseForTests, moving_frames, random_backbones, tone, write_wav

pytestmark = pytest.mark.usefixtures("one_thread")


def _clips(seed=0, n=2, frames=16, noise=0):
    out = []
    for i in range(n):
        f = moving_frames(frames, seed=seed + i, phase=0.1 * i)
        if noise:
            f = np.clip(f.astype(np.int16) + np.random.default_rng(9 + i).normal(0, noise, f.shape), 0, 255).astype(np.uint8)
        out.append(Clip.from_array(f"c{i}", f))
    return out


@pytest.mark.slow
def test_fid_fvd_with_test_backbones_self_distance_zero_and_finite():
    nets = random_backbones()
    ev = Evaluator("fid,fvd", backbones=nets, fvd_frames=8, device="cpu")
    ref = _clips()
    same = ev.evaluate(list(zip(_clips(), ref)))
    assert same["test_backbones"] is True
    assert abs(same["summary"]["fid"]) < 1e-6 and abs(same["summary"]["fvd"]) < 1e-6
    other = ev.evaluate(list(zip(_clips(noise=25), ref)))
    assert math.isfinite(other["summary"]["fid"]) and other["summary"]["fid"] > 1e-6
    assert math.isfinite(other["summary"]["fvd"]) and other["summary"]["fvd"] > 1e-6
    assert "TEST backbones" in format_table(other)


@pytest.mark.slow
def test_every_metric_code_path_with_test_backbones(tmp_path):
    ev = Evaluator("all", backbones=random_backbones(), pose=ConstructedPoseForTests(), fvd_frames=8, device="cpu")
    pred, ref = _clips(noise=10, frames=24), _clips(frames=24)
    wav = write_wav(tmp_path / "speech.wav", tone(1.0))
    for c in ref:  # the references carry the speech (24 frames at 24 fps = 1 s); predictions have none
        c.audio = wav
    result = ev.evaluate(list(zip(pred, ref)))
    s = result["summary"]
    for k in ("fid", "fvd", "efid", "psnr", "ssim", "lpips", "csim", "sync_c", "sync_d", "hkc", "hkv"):
        assert math.isfinite(s[k]), k
    assert s["hkc"] == pytest.approx(0.8) and -1 <= s["csim"] <= 1 and s["sync_c"] >= 0
    assert result["clips"]["c0"]["face_frames"] == 24


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["inception", "i3d", "deep3d", "syncnet"])
def test_real_architectures_load_key_for_key(tmp_path, kind):
    from echomimic_core.eval.deep3d import Deep3DRecon
    from echomimic_core.eval.i3d import InceptionI3d
    from echomimic_core.eval.inception import FIDInceptionV3
    from echomimic_core.eval.syncnet import SyncNet

    net = {"inception": FIDInceptionV3, "i3d": InceptionI3d, "deep3d": Deep3DRecon, "syncnet": SyncNet}[kind]()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    saved = dict(state)
    if kind == "inception":  # the pytorch-fid file carries the 1008-class fc, ignored
        saved["fc.weight"], saved["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    if kind == "deep3d":  # Deep3DFaceRecon checkpoints keep the network under net_recon
        saved = {"net_recon": saved, "epoch": torch.tensor(20)}
    path = tmp_path / BACKBONES[kind].names[0]
    torch.save(saved, path)
    loaded = load_backbone(kind, {kind: path})
    got = loaded.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())
    # a file of another layout is refused with the key names
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="does not match"):
        load_backbone(kind, {kind: path})


def test_missing_backbone_file_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv("ECHOMIMIC_EVAL_WEIGHTS", raising=False)
    for metric, name, source in (("fid", "pt_inception-2015-12-05-6726825d.pth", "pytorch-fid"),
                                 ("fvd", "i3d_pretrained_400.pt", "pytorch-i3d"),
                                 ("csim", "w600k_r50.onnx", "insightface"),
                                 ("efid", "epoch_20.pth", "Deep3DFaceRecon"),
                                 ("sync_c", "syncnet_v2.model", "syncnet_python"),
                                 ("lpips", "alexnet-owt-7be5be79.pth", "torchvision")):
        with pytest.raises(ModelFilesNotFoundError) as err:
            Evaluator(metric, weights_dir=tmp_path, pose=ConstructedPoseForTests())
        msg = str(err.value)
        assert name in msg and source in msg and str(tmp_path) in msg and "\n" not in msg, msg
    with pytest.raises(ModelFilesNotFoundError, match="--weight i3d=.*does not exist"):
        find_weight("i3d", overrides={"i3d": tmp_path / "nope.pt"})


def test_pickled_weight_file_is_refused(tmp_path):
    import pickle

    path = tmp_path / "syncnet_v2.model"
    path.write_bytes(pickle.dumps({"x": object()}))
    with pytest.raises(CheckpointError, match="weights_only"):
        load_backbone("syncnet", {"syncnet": path})
