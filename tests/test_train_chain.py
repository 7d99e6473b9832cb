"""The whole recipe on the synthetic data, end to end, on the tiny fixture networks: every stage-1 phase
config in order (each from the previous phase's export), then stage 2 with its motion modules initialised
from a motion_module.pth, validation renders written by every phase, and a final export that the
library loads. One step per phase: this checks the chaining, not the learning."""

from __future__ import annotations

import json

import pytest
import torch

from support.train import tiny_cfg, train_run as _train

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

CHAIN = ["stage1_1_initial_pose", "stage1_2_pose_iterative", "stage1_3_lips", "stage1_4a_head_headshot",
         "stage1_4b_head_halfbody", "stage1_5_hands_global", "stage2_temporal"]


def test_stage1_phases_then_stage2_on_synthetic_data(tmp_path, fixtures):
    from train.features import cache_features
    from train.synthetic import generate_dataset

    weights = fixtures / "weights"
    data = tmp_path / "data"
    generate_dataset(data, clips=2, frames=10, size=64, seed=0, heldout_frac=0.0, media_dir=None, progress=False)
    cache_features([data], str(weights / "audio_processor" / "tiny.pt"), progress=False)
    prev = None
    streams = set()
    for name in CHAIN:
        out = tmp_path / name
        over = dict(run={"max_steps": 1, "export_at_end": True},
                    data={"kinds": ["halfbody"]},  # the synthetic set has no headshot clips (phase 4a)
                    optim={"per_device_batch": 1},
                    validation={"every": 1, "frames": 2, "steps": 1},
                    training={"ema": {"enabled": True, "decay": 0.9}})
        if prev is None:
            over["init"] = {"from": "sd"}
        else:
            over["init"] = {"from": "official", "weights_folder": str(prev / "export")}
        if name == "stage2_temporal":
            over["init"]["motion_module"] = str(weights / "motion_module.pth")
            over["data"]["clip_frames"] = 4
            over["validation"]["frames"] = 4
        cfg = tiny_cfg(name, out, weights, data, **over)
        assert cfg["data"]["augment"]["prob"] > 0 and cfg["data"]["min_ref_gap"]  # real-data settings on
        tr, res = _train(cfg)
        assert res["step"] == 1 and not res["interrupted"]
        streams.add(tr.stream_seed)
        assert (out / "validation" / "step_00000001.mp4").stat().st_size > 0, name
        assert (out / "validation" / "step_00000001.png").is_file()
        assert (out / "export" / "denoising_unet.pth").is_file()
        prev = out
    assert len(streams) == len(CHAIN)  # every phase saw its own sample stream
    from echomimic_core.checkpoints import load_models

    m = load_models(prev / "export")
    want = torch.load(weights / "motion_module.pth", weights_only=True)
    got = m.denoising_unet.state_dict()
    k = next(k for k in want if k.endswith("attention_blocks.0.to_q.weight"))
    # one stage-2 step from the pretrained motion module: close to it (lr 1e-4), not the zero init
    assert (got[k].float() - want[k].float()).abs().max() < 1e-2 and got[k].abs().sum() > 0
    info = json.loads((prev / "validation" / "inputs.json").read_text())
    assert info["frames"] == 4 and info["ema"]
