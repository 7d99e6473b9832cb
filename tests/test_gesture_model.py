"""The embedded gesture model (echomimic_core/assets/gesture_model): loads, and on freshly generated held-out
synthetic clips (a seed, figures and a voice it never saw) beats both baselines - the reference pose held still
and a random real clip - on beat alignment and on the FGD-style distances (joint speech+motion and motion-only).
The margins are in the README ("Gestures from speech"); on this small set (6 clips) they are measured, not
tuned: beat alignment 0.434 vs 0.344 / 0, joint FGD 16.3 vs 27.5 / 49.3."""

from __future__ import annotations

import sys

import pytest

from support.paths import REPO

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def test_embedded_model_loads_and_is_small():
    from echomimic_core.gesture import DEFAULT_MODEL_DIR, load_gesture_model

    model = load_gesture_model()
    assert model.config["audio_layers"] == 2  # the embedded demo model's 1-layer whisper: 2 states per position
    assert sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir()) < 2 * 1024 * 1024
    assert "default_body" in model.info


def test_embedded_model_beats_baselines_on_heldout_clips(tmp_path):
    sys.path.insert(0, str(REPO))
    from echomimic_core.gesture import load_gesture_model
    from train import data as D
    from train import gesture as G
    from train import gesture_synth

    gesture_synth.generate(tmp_path / "data", clips=12, frames=120, seed=1234, heldout_frac=0.5)
    cfg = G.load_config("gesture_tiny", [f"run.output_dir={tmp_path / 'run'}"])
    train = G.load_clips([tmp_path / "data"], cfg, "train")
    held = G.load_clips([tmp_path / "data" / "heldout"], cfg, "heldout")
    assert len(held) == 6 and len(train) == 6
    res = G.evaluate(load_gesture_model(), held, train, seeds=(0, 1))
    model, still, rand = res["model"], res["still (reference pose)"], res["random training clip"]
    assert model["beat_alignment"] > max(still["beat_alignment"], rand["beat_alignment"])
    assert model["fgd_joint"] < min(still["fgd_joint"], rand["fgd_joint"])
    assert model["fgd_motion"] < min(still["fgd_motion"], rand["fgd_motion"])
    assert len(model["fgd_joint_draws"]) == 2 and len(rand["fgd_joint_draws"]) == 2  # one FGD per draw, averaged
    assert model["diversity"] > 0
    assert D.list_clips([tmp_path / "data"])  # written in the training dataset format
