"""Sync-C / Sync-D: score arithmetic on constructed embeddings, MFCC properties, the SyncNet code path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echomimic_core.eval.backbones import random_backbone_for_tests
from echomimic_core.eval.syncnet import SyncNet, evaluate_sync, face_crops, mfcc, resample_indices, sync_scores

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sync_scores_find_a_known_shift():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 8, generator=g)
    video = base[2:32]  # video window i matches audio window i + 2
    audio = base[:30]
    s = sync_scores(video, audio, vshift=5)
    assert s["offset"] == -2
    # brute force: mean over windows of the distance at each shift, zero padding outside
    pad = torch.cat([torch.zeros(5, 8), audio, torch.zeros(5, 8)])
    mdist = torch.stack([torch.stack([torch.dist(video[i], pad[i + j]) for i in range(30)]).mean()
                         for j in range(11)])
    assert s["sync_d"] == pytest.approx(float(mdist.min()), rel=1e-4)
    assert s["sync_c"] == pytest.approx(float(mdist.median() - mdist.min()), rel=1e-4)
    assert s["sync_d"] < 0.5  # the matching shift is nearly exact (only the padded tail differs)


def test_mfcc_frames_and_gain_only_moves_c0():
    x = np.random.default_rng(0).normal(0, 1000, 16000)
    a, b = mfcc(x), mfcc(2 * x)
    assert a.shape == (99, 13)  # 1 + ceil((16000 - 400) / 160) frames of 13 cepstra
    np.testing.assert_allclose(b[:, 0] - a[:, 0], np.log(4.0), atol=1e-9)  # c0 = log frame energy
    np.testing.assert_allclose(b[:, 1:], a[:, 1:], atol=1e-8)  # a gain shifts log-mel by a constant: DCT bin 0 only


def test_resample_to_25_fps():
    idx = resample_indices(24, 24.0)
    assert len(idx) == 25 and list(idx[:3]) == [0, 0, 1] and idx[-1] == 23
    assert list(resample_indices(10, 25.0)) == list(range(10))


def test_face_crops_follow_the_face():
    frames = np.zeros((3, 100, 120, 3), np.uint8)
    frames[:, 30:50, 50:70] = 255
    face = np.array([[50.0, 30.0], [70.0, 50.0]])
    crops = face_crops(frames, [face, None, face], size=32)
    assert crops.shape == (3, 32, 32, 3)
    assert crops[0].mean() > 40 and np.array_equal(crops[0], crops[1])  # a missing face reuses the nearest


@pytest.mark.slow
def test_syncnet_shaped_network_code_path():
    net = random_backbone_for_tests("syncnet")
    assert isinstance(net, SyncNet)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, size=(30, 224, 224, 3), dtype=np.uint8)
    audio = rng.normal(0, 0.1, 30 * 640).astype(np.float32)  # 1.2 s: 30 frames at 25 fps
    s = evaluate_sync(net, crops, audio, batch=8)
    assert np.isfinite(s["sync_d"]) and s["sync_c"] >= 0 and -15 <= s["offset"] <= 15
    with pytest.raises(ValueError, match="at least 6 frames"):
        evaluate_sync(net, crops[:5], audio)


def test_full_syncnet_shapes():
    net = SyncNet().eval()
    with torch.no_grad():
        assert net.forward_aud(torch.zeros(1, 1, 13, 20)).shape == (1, 1024)
    assert [tuple(m.weight.shape) for m in net.netcnnlip if isinstance(m, torch.nn.Conv3d)][0] == (96, 3, 5, 7, 7)
