"""Recipe fixes of issue 17: the phase is mixed into the sample stream, the launch config's mixed
precision wins unless the config sets one. (Resume stays bit-exact with the mixed stream:
tests/test_train_run.py::test_kill_and_resume_is_bit_identical runs a phase config with the default
`run.sample_stream: phase`.)"""

from __future__ import annotations

import pytest
import torch

from train import data as D
from train.phases import load_config, stream_seed

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return D.write_tiny_dataset(tmp_path_factory.mktemp("recipe_ds"), num_clips=4, num_frames=12, size=32,
                                tokens=4)


def _stream(cfg, clips, n=24):
    """What the run would see for sample numbers 0..n-1: (clip, frames, ref) and the first noise values."""
    seed = stream_seed(cfg)
    ds = D.TrainDataset(clips, resolution=32, seed=seed)
    out = []
    for i in range(n):
        clip, frames, ref = ds.locate(i)
        noise = torch.randn(4, generator=D.torch_gen(seed, "noise", i))
        out.append((clip.clip_id, tuple(frames), ref, tuple(noise.tolist())))
    return out


def test_two_phases_see_different_samples_and_a_phase_reproduces(dataset):
    clips = D.list_clips([dataset])
    p1, p2 = load_config("stage1_1_initial_pose"), load_config("stage1_2_pose_iterative")
    assert p1["run"]["seed"] == p2["run"]["seed"] == 42 and p1["run"]["sample_stream"] == "phase"
    s1, s2 = _stream(p1, clips), _stream(p2, clips)
    assert s1 == _stream(load_config("stage1_1_initial_pose"), clips)  # same phase, same stream
    assert sum(a[:3] != b[:3] for a, b in zip(s1, s2)) >= 12           # clips/frames differ for most samples
    assert all(a[3] != b[3] for a, b in zip(s1, s2))                    # and every noise draw differs
    # 4a and 4b (same seed, same everything but the phase name) differ too
    assert _stream(load_config("stage1_4a_head_headshot"), clips) != _stream(load_config("stage1_4b_head_halfbody"),
                                                                           clips)
    # a custom key gives a third stream; `seed` is the seed alone (the demo recipe's stream)
    s3 = _stream(load_config("stage1_1_initial_pose", ["run.sample_stream=second_pass"]), clips)
    assert s3 != s1 and s3 != s2
    legacy = [load_config(n, ["run.sample_stream=seed"]) for n in ("stage1_1_initial_pose", "stage1_2_pose_iterative")]
    assert stream_seed(legacy[0]) == 42 and _stream(legacy[0], clips) == _stream(legacy[1], clips)
    for demo in ("demo_stage1", "demo_stage1b", "demo_stage1c", "demo_stage2"):
        cfg = load_config(demo)
        assert stream_seed(cfg) == 42 and cfg["training"]["mixed_precision"] == "no", demo
    with pytest.raises(ValueError, match="sample_stream"):
        load_config("stage1_1_initial_pose", ["run.sample_stream=''"])


def _fresh_accelerate():
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.mark.parametrize("env,cfg_value,want", [
    ("bf16", None, "bf16"),   # the launch config (accelerate launch exports it) wins by default
    (None, None, "no"),       # plain `python train/apdh.py`: full precision
    ("bf16", "no", "no"),     # the config set it explicitly
    ("no", "bf16", "bf16"),
])
def test_launch_config_mixed_precision_wins_unless_the_config_sets_it(monkeypatch, env, cfg_value, want):
    from train.apdh import _make_accelerator

    if env is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", env)
    over = [] if cfg_value is None else [f"training.mixed_precision={cfg_value}"]
    cfg = load_config("stage1_1_initial_pose", over + ["run.output_dir=/tmp/unused_i17"])
    assert cfg["training"]["mixed_precision"] == cfg_value
    _fresh_accelerate()
    try:
        assert _make_accelerator(cfg).mixed_precision == want
    finally:
        _fresh_accelerate()
