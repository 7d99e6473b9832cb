"""Validation renders during training (train/monitor.py): written every N steps from fixed inputs with the
EMA weights swapped in (and restored), without disturbing the training stream; TensorBoard optional."""

from __future__ import annotations

import csv

import pytest
import torch

from support.train import dataset, weights  # noqa: F401  (fixtures)
from support.train import tiny_cfg, train_run as _train

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(tmp_path, name, weights, dataset, **over):
    base = dict(run={"max_steps": 2}, training={"ema": {"enabled": True, "decay": 0.5}})
    for k, v in over.items():
        base[k] = dict(base.get(k, {}), **v)
    return tiny_cfg("stage1_5_hands_global", tmp_path / name, weights, dataset, **base)


@pytest.mark.slow
def test_renders_every_n_steps_with_ema_weights_and_training_is_unchanged(tmp_path, weights, dataset, monkeypatch):
    import train.monitor as mon

    seen = []
    real = mon.render_clip

    def spy(pipe, *a, **kw):
        p = dict(pipe.denoising_unet.named_parameters())["conv_in.weight"]
        seen.append(p.detach().clone())
        return real(pipe, *a, **kw)

    monkeypatch.setattr(mon, "render_clip", spy)
    cfg = _cfg(tmp_path, "val", weights, dataset, validation={"every": 1, "frames": 4, "steps": 2})
    tr, res = _train(cfg)
    assert res["step"] == 2 and len(seen) == 2
    vdir = tmp_path / "val" / "validation"
    for step in (1, 2):
        mp4, png = vdir / f"step_{step:08d}.mp4", vdir / f"step_{step:08d}.png"
        assert mp4.stat().st_size > 0 and png.stat().st_size > 0
    from echomimic_core.video import probe

    info = probe(vdir / "step_00000002.mp4")
    assert info  # a readable mp4
    assert torch.equal(seen[-1], tr.ema.shadow["denoising_unet.conv_in.weight"])  # EMA weights rendered
    live = tr.net.denoising_unet.conv_in.weight.detach()
    assert not torch.equal(live, tr.ema.shadow["denoising_unet.conv_in.weight"])  # ... and swapped back out

    ref_tr, _ = _train(_cfg(tmp_path, "plain", weights, dataset))
    got, want = tr.net.state_dict(), ref_tr.net.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)  # renders do not disturb the training stream
    rows = list(csv.DictReader((tmp_path / "val" / "log.csv").open()))
    assert rows[-1]["grad_norm"] and float(rows[-1]["grad_norm"]) > 0


def test_validation_inputs_are_fixed_and_a_bad_clip_fails_clearly(tmp_path, weights, dataset):
    from train.apdh import Trainer
    from support.train import fresh_accelerate as _fresh_accelerate
    from train.monitor import Monitor

    _fresh_accelerate()
    cfg = _cfg(tmp_path, "x", weights, dataset,
               validation={"every": 1, "frames": 3, "clip": str(dataset / "clips" / "clip_0001")})
    m = Monitor(Trainer(cfg))
    ref, audio, poses = m.inputs()
    assert ref.shape == (64, 64, 3) and audio.shape == (3, 20, 384) and poses.shape == (3, 64, 64, 3)
    assert m.inputs()[0] is ref
    _fresh_accelerate()
    bad = _cfg(tmp_path, "y", weights, dataset, validation={"every": 1, "clip": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="validation.clip"):
        Monitor(Trainer(bad))


@pytest.mark.slow
def test_tensorboard_logs_losses_lr_grad_norm_and_frames(tmp_path, weights, dataset):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _cfg(tmp_path, "tb", weights, dataset, run={"tensorboard": True},
               validation={"every": 2, "frames": 2, "steps": 1})
    _train(cfg)
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/latent"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert "validation/frames" in str(tags)
