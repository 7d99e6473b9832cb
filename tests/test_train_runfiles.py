"""One latest-checkpoint lookup and custom objects (the EMA) found by name (train/run_files.py)."""

from __future__ import annotations

import json

import torch

from train.run_files import custom_object_files, latest_checkpoint, load_custom_object


def _ck(root, step, names=None, objects=None, complete=True):
    d = root / "checkpoints" / f"step_{step:08d}"
    d.mkdir(parents=True)
    for i, obj in enumerate(objects or []):
        torch.save(obj, d / f"custom_checkpoint_{i}.pkl")
    if complete:
        meta = {"step": step}
        if names is not None:
            meta["custom_objects"] = custom_object_files(names)
        (d / "train_complete.json").write_text(json.dumps(meta))
    return d


def test_latest_complete_checkpoint_and_ema_by_name(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    ema = {"decay": 0.9, "shadow": {"w": torch.ones(2)}}
    # a phase that registers one more object before the EMA: the EMA is file 3, found by its name
    a = _ck(tmp_path, 10, ["lr_scheduler", "state", "lora", "ema"], [{"x": 1}, {"step": 10}, {"r": 4}, ema])
    _ck(tmp_path, 20, complete=False)  # interrupted while saving: not a candidate
    assert latest_checkpoint(tmp_path) == a
    assert torch.equal(load_custom_object(a, "ema")["shadow"]["w"], torch.ones(2))
    assert load_custom_object(a, "missing") is None
    b = _ck(tmp_path, 30, None, [{"x": 1}, {"step": 30}, ema])  # written before the name map: found by content
    assert latest_checkpoint(tmp_path) == b and load_custom_object(b, "ema")["decay"] == 0.9
    c = _ck(tmp_path, 40, ["lr_scheduler", "state"], [{"x": 1}, {"step": 40}])  # EMA off
    assert load_custom_object(c, "ema") is None
