"""train/gesture_synth.py + train/gesture.py end to end on a tiny set: speech-driven synthetic clips in the
training format, a few training steps, the saved model loads and the held-out evaluation table is written."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from support.paths import REPO

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def test_synthetic_gestures_follow_speech_and_trainer_runs(tmp_path):
    sys.path.insert(0, str(REPO))
    from echomimic_core.gesture import GestureModel, metrics as M, speech_onsets
    from train import gesture as G
    from train import gesture_synth

    summary = gesture_synth.generate(tmp_path / "data", clips=4, frames=72, seed=7, heldout_frac=0.25)
    assert len(summary["train"]) == 3 and len(summary["heldout"]) == 1
    cfg = G.load_config("gesture_tiny", [f"run.output_dir={tmp_path / 'run'}"])
    clips = G.load_clips([tmp_path / "data"], cfg, "train")
    for c in clips:  # by construction the hands beat at the onsets: far above a 6-frame shift of them
        on = speech_onsets(c.envelope)
        assert M.beat_alignment(c.motion, on) > M.beat_alignment(c.motion, np.clip(on + 6, 0, len(c) - 1))
    out = tmp_path / "run"
    assert G.main(["gesture_tiny", "--set", f"data.roots=[{tmp_path / 'data'}]", "--set",
                   f"data.heldout={tmp_path / 'data' / 'heldout'}", "--set", f"run.output_dir={out}",
                   "--set", "train.steps=3", "--set", "train.batch=2", "--set", "eval.seeds=[0]"]) == 0
    model = GestureModel.load(out)
    assert model.info["trained_steps"] == 3 and "default_body" in model.info
    res = json.loads((out / "eval.json").read_text())
    assert {"model", "still (reference pose)", "random training clip"} <= set(res)
