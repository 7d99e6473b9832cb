"""The trainer raises the library's error types (echomimic_core.errors): ConfigError for config values,
InputError for bad data files; the apdh CLI turns them into one `error:` line and exit status 2."""

from __future__ import annotations

import wave

import pytest

from echomimic_core.errors import ConfigError, InputError
from train.phases import load_config


@pytest.mark.parametrize("override,match", [
    ("phase.stage=3", "phase.stage"),
    ("optim.optimizer=adam", "optim.optimizer"),
    ("data.augment.prob=2", "augment.prob"),
    ("losses.pose.backbone=openpose", "losses.pose.backbone"),
    ("optim.lrr=1", "did you mean optim.lr"),
    ("run.sample_stream=", "sample_stream"),
])
def test_bad_config_value_is_a_config_error(override, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_config("stage1_1_initial_pose", [override])
    assert isinstance(err.value, ValueError)  # callers catching ValueError still do


def test_apdh_cli_prints_one_error_line_and_exits_2(capsys):
    from train.apdh import main

    assert main(["stage1_1_initial_pose", "--set", "phase.audio=partial"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: phase.audio: partial needs phase.region") and err.count("\n") == 1


def test_helper_entry_points_use_the_library_types(tmp_path):
    from train.augment import check_augment
    from train.dataset_format import read_wav
    from train.features import parse_shard

    with pytest.raises(ConfigError, match="shard"):
        parse_shard("2/2")
    with pytest.raises(ConfigError, match="augment.scale"):
        check_augment({"prob": 0.5, "scale": [0.5, 2.0]})
    with wave.open(str(tmp_path / "a8.wav"), "wb") as f:  # 8-bit PCM: not the dataset format
        f.setnchannels(1), f.setsampwidth(1), f.setframerate(16000), f.writeframes(b"\x80" * 160)
    with pytest.raises(InputError, match="16-bit PCM"):
        read_wav(tmp_path / "a8.wav")


@pytest.mark.slow
def test_a_missing_file_met_while_building_the_trainer_is_one_line_too(tmp_path, fixtures, capsys):
    """Errors raised by Trainer(cfg) (here: the pose-loss estimator file) print like config errors."""
    from support.train import fresh_accelerate
    from train import data as D
    from train.apdh import main

    dataset = D.write_tiny_dataset(tmp_path / "ds", num_clips=1, num_frames=4, size=64, tokens=20)
    fresh_accelerate()
    code = main(["stage1_1_initial_pose", "--threads", "1", "--resume", "none",
                 "--set", f"init.base_folder={fixtures / 'weights'}", "--set", f"data.roots=[{dataset}]",
                 "--set", "data.resolution=64", "--set", "data.num_workers=0", "--set", f"run.output_dir={tmp_path / 'run'}",
                 "--set", "losses.lpips.net=random_init_for_tests",
                 "--set", f"losses.pose.backbone=dwpose_onnx:{tmp_path / 'dw-ll_ucoco_384.onnx'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: pose-loss estimator not found") and err.count("\n") == 1
