"""Checkpoint discovery, safe reading and key accounting: every error names the file and the fix."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from echomimic_core import checkpoints
from echomimic_core.checkpoints import (find_model_files, load_inference_config, load_models, read_state_dict,
                                        save_state_dict)
from echomimic_core.commands.check import report_folder
from echomimic_core.errors import CheckpointError, ModelFilesNotFoundError
from echomimic_core.models import OFFICIAL_NOISE_SCHEDULER_KWARGS, OFFICIAL_UNET_ADDITIONAL_KWARGS
from echomimic_core.models.motion_module import SinusoidalPositionTable


pytestmark = pytest.mark.usefixtures("one_thread")


def _link_tree(src: Path, dst: Path, skip=()) -> Path:
    """A copy of ``src`` made of symlinks (cheap); files named in ``skip`` are left out."""
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if str(rel) in skip or path.is_dir():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path, dst / rel)
    return dst


@pytest.fixture
def weights(fixtures, tmp_path):
    return fixtures / "weights"



def test_find_official_layout(weights):
    files = find_model_files(weights)
    assert not files.missing()
    assert files.reference_unet.name.startswith("reference_unet")
    assert files.inference_config is not None
    acc = find_model_files(weights, "acc")
    assert any("denoising_unet_acc" in m for m in acc.missing())


def test_missing_file(weights, tmp_path):
    folder = _link_tree(weights, tmp_path / "w", skip={"motion_module.pth"})
    with pytest.raises(ModelFilesNotFoundError) as err:
        load_models(folder)
    msg = str(err.value)
    assert "motion_module.pth" in msg and "Expected layout" in msg and str(folder) in msg
    with pytest.raises(ModelFilesNotFoundError, match="does not exist"):
        load_models(tmp_path / "nowhere")


def test_missing_acc_variant(weights):
    with pytest.raises(ModelFilesNotFoundError, match="denoising_unet_acc"):
        load_models(weights, variant="acc")


def test_truncated_and_corrupt_files(weights, tmp_path):
    folder = _link_tree(weights, tmp_path / "w", skip={"denoising_unet.pth", "reference_unet.pth"})
    data = (weights / "denoising_unet.pth").read_bytes()
    (folder / "denoising_unet.pth").write_bytes(data[: len(data) // 2])
    (folder / "reference_unet.pth").write_bytes(b"this is not a checkpoint")
    for name in ("denoising_unet.pth", "reference_unet.pth"):
        with pytest.raises(CheckpointError) as err:
            read_state_dict(folder / name)
        msg = str(err.value)
        assert name in msg and "truncated or corrupt" in msg and "download it again" in msg
    with pytest.raises(CheckpointError, match="reference_unet.pth"):
        load_models(folder)
    (folder / "empty.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad")
    with pytest.raises(CheckpointError, match="empty.safetensors.*truncated or corrupt"):
        read_state_dict(folder / "empty.safetensors")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused_without_running(weights, tmp_path, legacy):
    marker = tmp_path / "PWNED"
    folder = _link_tree(weights, tmp_path / "w", skip={"pose_encoder.pth"})
    payload = {"conv_in.weight": torch.zeros(1), "evil": _Exploit(marker)}
    if legacy:
        torch.save(payload, folder / "pose_encoder.pth", _use_new_zipfile_serialization=False)
    else:
        torch.save(payload, folder / "pose_encoder.pth")
    with pytest.raises(CheckpointError) as err:
        read_state_dict(folder / "pose_encoder.pth")
    assert "pose_encoder.pth" in str(err.value) and "refused" in str(err.value)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        checkpoints.load_pose_encoder(folder / "pose_encoder.pth")
    assert not marker.exists()


def test_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        read_state_dict(tmp_path / "list.pth")


@pytest.mark.slow
def test_unexpected_keys_named(weights, tmp_path):
    folder = _link_tree(weights, tmp_path / "w", skip={"denoising_unet.pth"})
    sd = read_state_dict(weights / "denoising_unet.pth")
    sd["up_blocks.9.extra.weight"] = torch.zeros(3)
    sd["down_blocks.0.attentions.0.transformer_blocks.0.attn3.to_q.weight"] = torch.zeros(3)
    save_state_dict(sd, folder / "denoising_unet.pth")
    with pytest.raises(CheckpointError) as err:
        load_models(folder)
    msg = str(err.value)
    assert "denoising_unet.pth" in msg and "2 unexpected key(s)" in msg
    assert "up_blocks.9.extra.weight" in msg and "attn3.to_q.weight" in msg and "Fix:" in msg


def test_wrong_shapes_and_missing_keys_strict(weights, tmp_path):
    folder = _link_tree(weights, tmp_path / "w", skip={"reference_unet.pth"})
    sd = read_state_dict(weights / "reference_unet.pth")
    w = sd["conv_in.weight"]
    sd["conv_in.weight"] = torch.zeros(w.shape[0] + 1, *w.shape[1:], dtype=w.dtype)
    dropped = next(k for k in sd if "attn1.to_q" in k)
    del sd[dropped]
    save_state_dict(sd, folder / "reference_unet.pth")
    with pytest.raises(CheckpointError) as err:
        load_models(folder)
    msg = str(err.value)
    assert "reference_unet.pth" in msg and "conv_in.weight: file" in msg and "1 shape mismatch" in msg
    assert dropped in msg and "1 missing key(s)" in msg


def test_pose_encoder_channels_from_shapes_and_strict(weights, tmp_path):
    sd = read_state_dict(weights / "pose_encoder.pth")
    pose = checkpoints.load_pose_encoder(weights / "pose_encoder.pth")
    assert pose.config.conditioning_embedding_channels == sd["conv_out.weight"].shape[0]
    del sd["conv_out.bias"]
    save_state_dict(sd, tmp_path / "pose_encoder.pth")
    with pytest.raises(CheckpointError, match=r"(?s)pose_encoder.pth.*conv_out.bias"):
        checkpoints.load_pose_encoder(tmp_path / "pose_encoder.pth")


@pytest.mark.slow
def test_denoiser_falls_back_to_base_weights_like_official(weights, tmp_path):
    """A non-motion key absent from denoising_unet.pth is taken from the base folder when its shape
    matches (official from_pretrained_2d); the 768-d stock attn2.to_k cannot stand in for the 384-d one."""
    folder = _link_tree(weights, tmp_path / "w", skip={"denoising_unet.pth", "motion_module.pth"})
    sd = read_state_dict(weights / "denoising_unet.pth")
    mm = read_state_dict(weights / "motion_module.pth")
    pe_key = next(k for k in mm if k.endswith("pos_encoder.pe"))
    expected_pe = mm.pop(pe_key)
    save_state_dict(mm, folder / "motion_module.pth")
    base_key = "conv_in.weight"
    sd.pop(base_key)
    save_state_dict(sd, folder / "denoising_unet.pth")
    report = checkpoints.LoadReport()
    den = checkpoints.load_denoising_unet(folder / "denoising_unet.pth", folder / "motion_module.pth",
                                          find_model_files(folder).base_unet_dir, report=report)
    base = read_state_dict(checkpoints.base_weights(find_model_files(folder).base_unet_dir).paths[0])
    assert report.sources.get("base_unet") == 1
    assert torch.equal(den.state_dict()[base_key], base[base_key].float())
    assert report.recomputed == [pe_key]
    torch.testing.assert_close(den.state_dict()[pe_key], expected_pe.float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(SinusoidalPositionTable.table(expected_pe.shape[-1], expected_pe.shape[-2]),
                               expected_pe.float(), atol=1e-6, rtol=0)

    attn2 = next(k for k in sd if k.endswith("attn2.to_k.weight"))
    file_shape = sd.pop(attn2).shape
    save_state_dict(sd, folder / "denoising_unet.pth")
    if attn2 in base and base[attn2].shape == file_shape:  # base cross_attention_dim == audio width
        checkpoints.load_denoising_unet(folder / "denoising_unet.pth", folder / "motion_module.pth",
                                        find_model_files(folder).base_unet_dir)
        return
    with pytest.raises(CheckpointError) as err:
        checkpoints.load_denoising_unet(folder / "denoising_unet.pth", folder / "motion_module.pth",
                                        find_model_files(folder).base_unet_dir)
    assert attn2 in str(err.value) and "1 missing key(s)" in str(err.value)


@pytest.mark.slow
def test_motion_module_shape_mismatch_reported(weights, tmp_path):
    folder = _link_tree(weights, tmp_path / "w", skip={"motion_module.pth"})
    mm = read_state_dict(weights / "motion_module.pth")
    key = next(k for k in mm if k.endswith("proj_in.weight"))
    mm[key] = torch.zeros(3, 3)
    save_state_dict(mm, folder / "motion_module.pth")
    with pytest.raises(CheckpointError, match=r"(?s)motion_module.pth.*" + key.replace(".", r"\.")):
        load_models(folder)


def test_inference_config_builtin_and_override(tmp_path):
    cfg = load_inference_config(None)
    assert cfg["unet_additional_kwargs"] == OFFICIAL_UNET_ADDITIONAL_KWARGS
    assert cfg["noise_scheduler_kwargs"] == OFFICIAL_NOISE_SCHEDULER_KWARGS
    (tmp_path / "c.json").write_text('{"noise_scheduler_kwargs": {"beta_start": 0.001}}')
    cfg = load_inference_config(tmp_path / "c.json")
    assert cfg["noise_scheduler_kwargs"] == {"beta_start": 0.001}
    assert cfg["unet_additional_kwargs"] == OFFICIAL_UNET_ADDITIONAL_KWARGS
    yaml_path = tmp_path / "configs" / "inference" / "inference_v2.yaml"
    yaml_path.parent.mkdir(parents=True)
    yaml_path.write_text("unet_additional_kwargs:\n  use_motion_module: true\nnoise_scheduler_kwargs:\n"
                         "  beta_schedule: \"linear\"\nsampler: DDIM\n")
    cfg = load_inference_config(yaml_path)
    assert cfg == {"unet_additional_kwargs": {"use_motion_module": True},
                   "noise_scheduler_kwargs": {"beta_schedule": "linear"}}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CheckpointError, match="bad.json"):
        load_inference_config(tmp_path / "bad.json")


@pytest.mark.slow
def test_comfyui_pack_layout(weights, tmp_path):
    """models/echo_mimic/{unet/, audio_processor/whisper_tiny.pt, v2/*.pth} + models/vae/sd-vae-ft-mse/."""
    models_dir = tmp_path / "models"
    echo = models_dir / "echo_mimic"
    for name in ("reference_unet.pth", "denoising_unet.pth", "motion_module.pth", "pose_encoder.pth",
                 "inference_config.json"):
        (echo / "v2").mkdir(parents=True, exist_ok=True)
        os.symlink(weights / name, echo / "v2" / name)
    shutil.copytree(weights / "sd-image-variations-diffusers" / "unet", echo / "unet")
    (echo / "audio_processor").mkdir()
    os.symlink(weights / "audio_processor" / "tiny.pt", echo / "audio_processor" / "whisper_tiny.pt")
    shutil.copytree(weights / "sd-vae-ft-mse", models_dir / "vae" / "sd-vae-ft-mse")
    for folder in (echo, echo / "v2"):
        files = find_model_files(folder)
        assert not files.missing(), files
        assert files.weights_dir == echo / "v2" and files.audio_encoder.name == "whisper_tiny.pt"
        assert files.vae == models_dir / "vae" / "sd-vae-ft-mse"
    models = load_models(echo)
    assert models.audio_encoder_path.name == "whisper_tiny.pt"


@pytest.mark.slow
def test_load_models_bundle(weights):
    models = load_models(weights, dtype=torch.float16)
    assert models.variant == "normal" and models.dtype == torch.float16
    for net in models.networks().values():
        assert all(p.dtype == torch.float16 and not p.is_meta for p in net.parameters())
    assert models.scheduler_kwargs["prediction_type"] == "v_prediction"
    assert models.unet_additional_kwargs["cross_attention_dim"] == models.denoising_unet.config.cross_attention_dim
    assert models.audio_encoder_path.is_file()
    models.to(dtype=torch.float32)
    assert next(models.denoising_unet.parameters()).dtype == torch.float32


@pytest.mark.slow
def test_report_folder(weights, tmp_path, capsys):
    assert report_folder(weights, load=False) == 0
    out = capsys.readouterr().out
    assert "variant normal" in out and "variant acc" in out and "not installed (optional)" in out
    broken = _link_tree(weights, tmp_path / "w", skip={"pose_encoder.pth"})
    assert report_folder(broken, load=False) == 1
    assert "missing pose_encoder.pth" in capsys.readouterr().out.replace("  ", " ")
    corrupt = _link_tree(weights, tmp_path / "c", skip={"pose_encoder.pth"})
    (corrupt / "pose_encoder.pth").write_bytes(b"xx")
    assert report_folder(corrupt, load=True) == 1
    assert "LOAD FAILED" in capsys.readouterr().out


def test_single_file_vae(weights, tmp_path):
    """A single diffusers-format VAE file is read with the built-in sd-vae-ft-mse config; a file of
    another size is reported by name."""
    path = tmp_path / "vae" / "sd-vae-ft-mse.safetensors"
    path.parent.mkdir()
    os.symlink(weights / "sd-vae-ft-mse" / "diffusion_pytorch_model.safetensors", path)
    with pytest.raises(CheckpointError, match=r"(?s)sd-vae-ft-mse.safetensors.*shape mismatch"):
        checkpoints.load_vae(path)
    save_state_dict({"encoder.down.0.block.0.conv1.weight": torch.zeros(1)}, tmp_path / "ldm.safetensors")
    with pytest.raises(CheckpointError, match="LDM"):
        checkpoints.load_vae(tmp_path / "ldm.safetensors")


@pytest.mark.slow
def test_nan_weights_are_not_reported_as_loading_ok(weights, tmp_path, capsys):
    folder = _link_tree(weights, tmp_path / "w", skip={"pose_encoder.pth"})
    sd = read_state_dict(weights / "pose_encoder.pth")
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("nan")
    save_state_dict(sd, folder / "pose_encoder.pth")
    assert checkpoints.nonfinite_keys(sd) == [key]
    assert report_folder(folder, load=True) == 1
    out = capsys.readouterr().out
    assert "NON-FINITE WEIGHTS in pose_encoder" in out and key in out and "loads OK" not in out.split("variant acc")[0]
    assert report_folder(weights, load=True) == 0
    assert "all values finite" in capsys.readouterr().out


def test_save_state_dict_is_atomic_and_world_readable(tmp_path):
    sd = {"a": torch.arange(6.0).view(2, 3).t(), "b": torch.zeros(2, dtype=torch.int64)}
    for suffix in (".pth", ".safetensors"):
        path = save_state_dict(sd, tmp_path / f"x{suffix}", dtype=torch.float16, verify=True)
        assert (path.stat().st_mode & 0o777) == 0o644
        back = read_state_dict(path)
        assert back["a"].dtype == torch.float16 and back["b"].dtype == torch.int64
        assert torch.equal(back["a"].float(), sd["a"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pth", "x.safetensors"]  # no temporary left


@pytest.mark.slow
def test_motion_modules_swap_without_reloading_the_unet(weights, tmp_path):
    """A motion file loads as its own model and replaces the denoiser's motion modules in place."""
    models = load_models(weights)
    den = models.denoising_unet
    spatial_before = {k: v.clone() for k, v in den.named_spatial_parameters()}
    other = {k: torch.randn_like(v) for k, v in den.motion_module_state_dict().items()}
    checkpoints.save_state_dict(other, tmp_path / "motion_other.safetensors")
    mm = checkpoints.load_motion_modules(tmp_path / "motion_other.safetensors", den)
    assert set(mm.state_dict()) == set(other)
    old = mm.apply_to(den)
    for k, v in den.motion_module_state_dict().items():
        assert torch.equal(v, other[k]), k
    assert all(torch.equal(v, spatial_before[k]) for k, v in den.named_spatial_parameters())
    old.apply_to(den)  # swap back
    original = read_state_dict(find_model_files(weights).motion_module)
    now = den.state_dict()
    assert all(torch.equal(now[k], v.to(torch.float32)) for k, v in original.items())
    bad = dict(other)
    bad.pop(next(iter(bad)))
    bad["down_blocks.0.motion_modules.9.x"] = torch.zeros(1)
    checkpoints.save_state_dict(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"(?s)bad.pth.*1 unexpected key"):
        checkpoints.load_motion_modules(tmp_path / "bad.pth", den)
