"""Gesture package: pose format round trip, still hands, the pose library's length and join bound, windowed
sampling, speech timing and metrics (random-weight models; the trained model is in test_gesture_model.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echomimic_core.errors import InputError
from echomimic_core.gesture import (GestureModel, JOIN_STEP, clip_motion, pose_library, poses_for, speech_envelope,
                                    speech_onsets, speech_pauses, still_hands)
from echomimic_core.gesture import metrics as M
from echomimic_core.pose import PoseSequence, draw_hands, load_pose_sequence, save_pose_sequence
from echomimic_core.pose.formats import normalize_frame

pytestmark = pytest.mark.usefixtures("one_thread")
DEMO = __import__("pathlib").Path(__file__).resolve().parents[1] / "echomimic_core" / "assets" / "demo" / "poses.npz"


@pytest.fixture(scope="module")
def demo_seq() -> PoseSequence:
    return load_pose_sequence(DEMO)


def _random_model(seed=0, **kw) -> GestureModel:
    torch.manual_seed(seed)
    m = GestureModel(audio_layers=2, hidden=32, dilations=(1, 2), window=40, overlap=10, steps=3, **kw)
    with torch.no_grad():  # non-zero output layer, so the sample actually moves
        m.out.weight.normal_(0, 0.05)
    m.info = {}
    return m.eval()


def test_audio_mode_round_trips_through_format_and_drawing(demo_seq, tmp_path):
    model = _random_model()
    chunks = torch.randn(70, 20, 384)
    seq = poses_for(demo_seq[0], chunks, 70, "audio", model=model, seed=3)
    assert len(seq) == 70
    for f in seq.frames:
        g = normalize_frame(f)  # valid layout
        assert g["hands"].shape == (2, 21, 2) and g["hands_score"].shape == (2, 21)
        cand = g["bodies"]["candidate"]
        np.testing.assert_allclose(cand[7], g["hands"][0, 0])  # wrists follow the hands
        np.testing.assert_allclose(cand[4], g["hands"][1, 0])
    path = save_pose_sequence(seq, tmp_path / "g.npz")
    back = load_pose_sequence(path)
    assert len(back) == 70
    for a, b in zip(seq.frames, back.frames):
        np.testing.assert_allclose(a["hands"], b["hands"])
        np.testing.assert_array_equal(draw_hands(a, 64, 64), draw_hands(b, 64, 64))
    img = draw_hands(seq[10], 64, 64)
    assert img.shape == (64, 64, 3) and img.any()
    # head and face are the reference's, unchanged
    np.testing.assert_allclose(seq[5]["faces"], normalize_frame(demo_seq[0])["faces"])


def test_audio_mode_seed_amount_and_length(demo_seq):
    model = _random_model()
    chunks = torch.randn(130, 20, 384)  # several windows
    a = poses_for(demo_seq[0], chunks, 130, model=model, seed=1)
    b = poses_for(demo_seq[0], chunks, 130, model=model, seed=1)
    c = poses_for(demo_seq[0], chunks, 130, model=model, seed=2)
    ha = np.stack([f["hands"] for f in a.frames])
    np.testing.assert_array_equal(ha, np.stack([f["hands"] for f in b.frames]))
    assert not np.allclose(ha, np.stack([f["hands"] for f in c.frames]))
    still = poses_for(demo_seq[0], chunks, 130, model=model, seed=1, amount=0.0)
    hs = np.stack([f["hands"] for f in still.frames])
    np.testing.assert_allclose(hs, np.repeat(normalize_frame(demo_seq[0])["hands"][None], 130, 0), atol=1e-9)
    # windows cross-fade: no step at a window join is larger than the largest step inside a window
    steps = np.linalg.norm(np.diff(ha, axis=0), axis=-1).max(axis=(1, 2))
    assert steps[29:31].max() <= steps.max() + 1e-9 and np.isfinite(steps).all()
    # shorter features than frames: the last one is reused
    assert len(poses_for(demo_seq[0], chunks[:50], 60, model=model)) == 60


def test_wrong_encoder_features_fail_clearly(demo_seq):
    with pytest.raises(InputError, match="states per position"):
        poses_for(demo_seq[0], torch.randn(20, 50, 384), 20, model=_random_model())


def test_still_hands_constant_and_equal_to_reference(demo_seq):
    ref = normalize_frame(demo_seq[17])
    seq = poses_for(ref, None, 40, "still")
    assert len(seq) == 40
    for f in seq.frames:
        np.testing.assert_allclose(f["hands"], ref["hands"], atol=1e-12)
        np.testing.assert_allclose(f["bodies"]["candidate"][[3, 4, 6, 7]], ref["bodies"]["candidate"][[3, 4, 6, 7]], atol=1e-12)
    np.testing.assert_array_equal(draw_hands(seq[0], 64, 64), draw_hands(seq[39], 64, 64))


@pytest.mark.parametrize("n", [1, 37, 96, 500])
def test_pose_library_exact_length_and_join_bound(demo_seq, n):
    clips = [demo_seq.select(range(0, 40)), demo_seq.select(range(40, 96)), demo_seq.select(range(10, 70))]
    pauses = [30, 80, 140, 150, 260, 390]
    seq = pose_library(clips, n, demo_seq[0], pauses=pauses, seed=4, min_segment=12)
    assert len(seq) == n
    if n < 2:
        return
    pts = np.stack([np.concatenate([f["hands"].reshape(-1, 2), f["bodies"]["candidate"][[3, 6]]]) for f in seq.frames])
    src_step = max(np.linalg.norm(np.diff(np.stack([np.concatenate([f["hands"].reshape(-1, 2),
                                                                      f["bodies"]["candidate"][[3, 6]]])
                                                      for f in c.frames]), axis=0), axis=-1).max() for c in clips)
    step = np.linalg.norm(np.diff(pts, axis=0), axis=-1).max()
    assert step <= src_step + JOIN_STEP + 1e-9


def test_pose_library_places_motion_on_reference_body(demo_seq):
    ref = normalize_frame(demo_seq[0])
    moved = normalize_frame(ref)
    neck = ref["bodies"]["candidate"][1].copy()
    for arr in (moved["bodies"]["candidate"], moved["hands"], moved["faces"]):
        arr[:] = neck + (arr - neck) * 0.8 + [0.02, -0.01]  # the same person, smaller and shifted (hands stay inside)
    seq = pose_library([demo_seq], 50, moved, seed=0)
    m_src, m_out = clip_motion(demo_seq), clip_motion(seq)
    assert np.abs(m_out).max() < 10
    # body-coordinate motion is a subsequence of the source's (ping-pong), whatever the placement
    d = np.abs(m_out[:, None] - m_src[None]).max(axis=(2, 3)).min(1)
    assert d.max() < 1e-6
    np.testing.assert_allclose(seq[0]["bodies"]["candidate"][1], moved["bodies"]["candidate"][1])


def test_speech_timing():
    sr, fps = 16000, 24
    t = np.arange(int(2.0 * sr)) / sr
    x = np.zeros_like(t)
    for start in (0.2, 0.6, 1.4):  # three syllables, a pause between 0.8 and 1.4 s
        seg = (t >= start) & (t < start + 0.2)
        x[seg] = 0.3 * np.sin(2 * np.pi * 200 * t[seg])
    env = speech_envelope(x, fps)
    assert env.shape == (48,) and env.max() > 0.8 and env[25:31].max() < 0.05
    on = speech_onsets(env)
    assert len(on) == 3 and np.all(np.abs(on - np.array([0.2, 0.6, 1.4]) * fps) <= 2)
    assert any(20 <= p <= 33 for p in speech_pauses(env))


def test_metrics_behave():
    rng = np.random.default_rng(0)
    n = 120
    onsets = np.arange(10, n, 12)
    still = np.zeros((n, 44, 2))
    assert M.beat_alignment(still, onsets) == 0.0 and M.jitter(still) == 0.0
    beat = np.zeros((n, 44, 2))
    for o in onsets:  # a quick move right after every onset
        beat[o + 1:, :42, 1] += 0.3 * (-1) ** (o // 12)
    assert M.beat_alignment(beat, onsets) > 0.8
    assert M.beat_alignment(beat, onsets + 6) < 0.5
    a = rng.normal(size=(200, 5))
    assert M.frechet_distance(a, a) < 1e-6
    assert M.frechet_distance(a, a + 1) == pytest.approx(5.0, rel=1e-6)
    assert M.diversity([still, still]) == 0.0 and M.diversity([still, beat]) > 0
    assert M.window_stats(beat, np.zeros(n)).shape[0] == (n - 24) // 12 + 1


def test_curvature_term_adds_the_second_difference_error():
    """flow_loss(curvature=c) = plain loss + c * mean squared second difference (along time) of the same
    velocity error; masked frames count in neither."""
    from echomimic_core.gesture.model import smooth_noise

    model = GestureModel(audio_layers=2, hidden=32, dilations=(1, 2)).eval()  # zero output layer: v = 0
    x1, audio, anchor = torch.randn(2, 12, 16), torch.randn(2, 12, 2, 384), torch.zeros(2, 88)
    mask = torch.ones(2, 12, 1)
    mask[1, 6:] = 0
    with torch.no_grad():
        e = x1 - smooth_noise(x1.shape, torch.Generator().manual_seed(0), 2.0)  # = -(error) when v = 0
        d2 = e[:, 2:] - 2 * e[:, 1:-1] + e[:, :-2]
        m2 = torch.ones(2, 10, 1)
        m2[1, 4:] = 0  # differences reaching frame 6 or later
        plain = (e ** 2 * mask).sum() / (mask.sum() * 16)
        want = plain + 0.5 * (d2 ** 2 * m2).sum() / (m2.sum() * 16)
        loss = lambda c: model.flow_loss(x1, audio, anchor, mask, torch.Generator().manual_seed(0), curvature=c).item()  # noqa: E731
        assert loss(0.0) == pytest.approx(plain.item(), rel=1e-5)
        assert loss(0.5) == pytest.approx(want.item(), rel=1e-5)
