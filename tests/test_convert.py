"""``python -m echomimic_core.convert``: .pth folder → .safetensors → .pth, tensors bit-identical, and the
converted folder loads to the same networks."""

from __future__ import annotations

import pytest
import torch

from echomimic_core.checkpoints import find_model_files, load_models, read_state_dict
from echomimic_core.checkpoints import verify_identical
from echomimic_core.convert import main
from echomimic_core.errors import CheckpointError

STATE_FILES = ("reference_unet", "denoising_unet", "motion_module", "pose_encoder")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_round_trip_folder(fixtures, tmp_path, capsys):
    src = fixtures / "weights"
    st, back = tmp_path / "st", tmp_path / "back"
    assert main([str(src), str(st)]) == 0
    for stem in STATE_FILES:
        assert (st / f"{stem}.safetensors").is_file() and not (st / f"{stem}.pth").exists()
        verify_identical(read_state_dict(src / f"{stem}.pth"), read_state_dict(st / f"{stem}.safetensors"), stem)
    # not a plain state dict (whisper checkpoint with dims): copied unchanged
    assert (st / "audio_processor" / "tiny.pt").read_bytes() == (src / "audio_processor" / "tiny.pt").read_bytes()
    assert (st / "inference_config.json").is_file()
    assert "verified identical" in capsys.readouterr().out

    assert main([str(st), str(back), "--to", "pth"]) == 0
    for stem in STATE_FILES:
        verify_identical(read_state_dict(src / f"{stem}.pth"), read_state_dict(back / f"{stem}.pth"), stem)
    assert (back / "sd-vae-ft-mse" / "diffusion_pytorch_model.bin").is_file()  # diffusers naming

    # existing output is not overwritten silently
    assert main([str(src), str(st)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main([str(src), str(st), "--overwrite"]) == 0

    # the converted folder loads through the real loader to identical networks
    files = find_model_files(st)
    assert files.reference_unet.suffix == ".safetensors"
    a = load_models(src)
    for other in (load_models(st), load_models(back)):
        for name, net in a.networks().items():
            sa, sb = net.state_dict(), other.networks()[name].state_dict()
            assert sa.keys() == sb.keys()
            assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def test_single_file_and_errors(fixtures, tmp_path, capsys):
    src = fixtures / "weights" / "pose_encoder.pth"
    assert main([str(src), str(tmp_path / "pose.safetensors")]) == 0
    verify_identical(read_state_dict(src), read_state_dict(tmp_path / "pose.safetensors"), "pose")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"nope")
    assert main([str(bad), str(tmp_path / "out")]) == 1
    assert "bad.pth" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.pth"), str(tmp_path / "o")]) == 2
    with pytest.raises(CheckpointError, match="differs"):
        verify_identical({"a": torch.zeros(2)}, {"a": torch.ones(2)}, "x")
    with pytest.raises(CheckpointError, match="differs"):
        verify_identical({"a": torch.zeros(2)}, {"a": torch.zeros(2, dtype=torch.float16)}, "x")
