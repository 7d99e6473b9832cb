"""Known-answer tests of the backbone-free metrics: PSNR, SSIM, Fréchet distance, HKC / HKV."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echomimic_core.errors import InputError
from echomimic_core.eval import frechet_distance, hkc, hkv, parse_metrics, psnr_frames, ssim_frames
from echomimic_core.eval.frechet import GaussianStats, frechet_from_features
from echomimic_core.eval.hands import hand_arrays
from echomimic_core.eval.pixel import expected_psnr, gaussian_window

pytestmark = pytest.mark.usefixtures("one_thread")


def _frames(n=3, h=32, w=40, seed=0):
    return np.random.default_rng(seed).integers(20, 236, size=(n, h, w, 3), dtype=np.uint8)


def test_identical_frames_psnr_inf_ssim_one():
    a = _frames()
    assert np.all(np.isinf(psnr_frames(a, a.copy())))
    np.testing.assert_allclose(ssim_frames(a, a.copy()), 1.0, atol=1e-12)


def test_constant_offset_gives_exact_psnr():
    a = _frames()
    b = (a.astype(np.int16) + 5).astype(np.uint8)  # values <= 235 + 5: no clipping
    want = 10 * math.log10(255.0 ** 2 / 25.0)  # MSE = 5^2
    np.testing.assert_allclose(psnr_frames(b, a), want, rtol=0, atol=1e-9)
    assert expected_psnr(25.0) == pytest.approx(want)


def test_gaussian_noise_level_gives_expected_psnr():
    rng = np.random.default_rng(1)
    a = np.full((4, 64, 64, 3), 128, dtype=np.uint8)
    noise = rng.choice([-8, 8], size=a.shape)  # |noise| = 8 everywhere: MSE exactly 64
    b = (a.astype(np.int16) + noise).astype(np.uint8)
    np.testing.assert_allclose(psnr_frames(b, a), 10 * math.log10(255.0 ** 2 / 64.0), atol=1e-9)


def test_ssim_properties_and_window():
    g = gaussian_window()
    assert len(g) == 11 and float(g.sum()) == pytest.approx(1.0) and int(g.argmax()) == 5
    a = _frames(2, 48, 48, seed=2)
    noisy = np.clip(a.astype(np.int16) + np.random.default_rng(3).normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    s = ssim_frames(noisy, a)
    assert np.all(s < 0.99) and np.all(s > -1)
    np.testing.assert_allclose(s, ssim_frames(a, noisy), atol=1e-12)  # symmetric
    # a flat image against a shifted flat image: only the luminance term remains
    f1, f2 = np.full((1, 16, 16, 3), 100, np.uint8), np.full((1, 16, 16, 3), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    np.testing.assert_allclose(ssim_frames(f1, f2), (2 * 100 * 110 + c1) / (100 ** 2 + 110 ** 2 + c1), atol=1e-12)


def test_frechet_known_gaussians_and_self_distance():
    a = GaussianStats(np.zeros(3), np.eye(3), 10)
    b = GaussianStats(np.array([1.0, 2.0, 2.0]), np.eye(3), 10)
    assert frechet_distance(a, b) == pytest.approx(9.0)
    c = GaussianStats(np.zeros(2), np.diag([4.0, 9.0]), 10)
    d = GaussianStats(np.zeros(2), np.diag([1.0, 1.0]), 10)
    assert frechet_distance(c, d) == pytest.approx((2 - 1) ** 2 + (3 - 1) ** 2)
    feats = np.random.default_rng(0).normal(size=(50, 8))
    assert abs(frechet_from_features(feats, feats)) < 1e-6
    with pytest.raises(InputError, match="at least 2"):
        GaussianStats.of(feats[:1])


def _frame(hands_xy, hands_score, body_score=1.0):
    return {"bodies": {"candidate": np.zeros((18, 2)), "subset": np.arange(18)[None].astype(float),
                       "score": np.full((1, 18), body_score)},
            "hands": np.asarray(hands_xy, float), "hands_score": np.asarray(hands_score, float),
            "faces": np.zeros((1, 68, 2)), "faces_score": np.zeros((1, 68))}


def test_hkc_hkv_hand_computed():
    W, H = 100, 50
    frames = []
    for t, x in enumerate((0.1, 0.2, 0.3)):
        xy = np.full((2, 21, 2), 0.5)
        xy[0, 0] = (x, 0.4)  # left-hand wrist moves 10 px per frame in x
        sc = np.zeros((2, 21))
        sc[0] = 0.9  # right hand never confident -> no HKV entries, confidence 0 in HKC
        frames.append(_frame(xy, sc))
    pos, conf = hand_arrays(frames, W, H)
    assert pos.shape == (3, 2, 21, 2) and conf.shape == (3, 2, 21)
    assert hkc(conf) == pytest.approx(0.9 * 21 * 3 / (2 * 21 * 3))
    var_x = np.var([10.0, 20.0, 30.0])  # 66.67 px^2; every other coordinate is constant
    assert hkv(pos, conf) == pytest.approx(var_x / (21 * 2))


def test_hkv_uses_only_confident_frames_and_main_person():
    W = H = 10
    frames = []
    for t in range(4):
        xy = np.zeros((4, 21, 2))  # two persons: rows 0,1 = left hands, rows 2,3 = right hands
        xy[1, :, 0] = [0.0, 0.2, 0.4, 0.9][t]  # person 1's left hand moves
        sc = np.zeros((4, 21))
        sc[1] = [1.0, 1.0, 1.0, 0.1][t]  # ... its last position is not confident
        fr = _frame(xy, sc)
        fr["bodies"]["score"] = np.array([[0.2] * 18, [0.9] * 18])  # person 1 is the main person
        fr["bodies"]["candidate"] = np.zeros((36, 2))
        frames.append(fr)
    pos, conf = hand_arrays(frames, W, H)
    assert hkc(conf) == pytest.approx((21 * 3 * 1.0 + 21 * 0.1) / (4 * 2 * 21))
    assert hkv(pos, conf) == pytest.approx(np.var([0.0, 2.0, 4.0]) / 2)  # x varies, y does not


def test_parse_metrics():
    assert parse_metrics("paper") == ("fid", "fvd", "ssim", "psnr", "efid", "sync_d", "sync_c", "hkc", "hkv", "csim")
    assert parse_metrics("SSIM, psnr") == ("ssim", "psnr")
    assert parse_metrics(["sync-c", "all"])[-1] == "lpips"
    with pytest.raises(InputError, match="unknown metric"):
        parse_metrics("fidd")


def test_ssim_matches_a_direct_computation():
    """Brute-force SSIM over every valid 11x11 window (2-D Gaussian weights), one channel at a time."""
    a = _frames(1, 13, 12, seed=5)
    b = _frames(1, 13, 12, seed=6)
    g = gaussian_window().numpy()
    w2 = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for ch in range(3):
        x, y = a[0, :, :, ch].astype(float), b[0, :, :, ch].astype(float)
        for i in range(13 - 10):
            for j in range(12 - 10):
                px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
                mx, my = (w2 * px).sum(), (w2 * py).sum()
                vx, vy = (w2 * px * px).sum() - mx ** 2, (w2 * py * py).sum() - my ** 2
                cxy = (w2 * px * py).sum() - mx * my
                vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    assert ssim_frames(a, b)[0] == pytest.approx(np.mean(vals), abs=1e-10)


def test_similarity_alignment_puts_the_landmarks_on_the_template():
    from echomimic_core.eval.face import ARCFACE_TEMPLATE, align_face, five_points, similarity_transform

    ang, scale, shift = 0.3, 2.5, np.array([40.0, 25.0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = ARCFACE_TEMPLATE @ rot.T * scale + shift  # the template seen rotated, scaled and shifted
    m = similarity_transform(pts, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(pts @ m[:, :2].T + m[:, 2], ARCFACE_TEMPLATE, atol=1e-9)
    image = np.zeros((400, 400, 3), np.uint8)
    x, y = np.round(pts[2]).astype(int)
    image[y - 2:y + 3, x - 2:x + 3] = 255  # a dot on the nose tip
    crop = align_face(image, pts, 112)
    ys, xs = np.nonzero(crop[..., 0] > 128)
    assert abs(xs.mean() - ARCFACE_TEMPLATE[2, 0]) < 1.5 and abs(ys.mean() - ARCFACE_TEMPLATE[2, 1]) < 1.5
    face = np.zeros((68, 2))
    face[36:42], face[42:48], face[30], face[48], face[54] = (10, 20), (30, 20), (20, 30), (12, 40), (28, 40)
    np.testing.assert_allclose(five_points(face), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])


def test_hand_metrics_with_an_extractor():
    from echomimic_core.eval.hands import hand_metrics
    from support.eval import ConstructedPoseForTests, moving_frames

    frames = moving_frames(6)
    out = hand_metrics(frames, ConstructedPoseForTests())
    assert out["hkc"] == pytest.approx(0.8) and out["hkv"] > 0  # hands follow the frame brightness
