"""echomimic_core.lora on the tiny fixture model: file format, base fingerprint, patching (strength 0 is
bit-exact, stacking, removal), a fresh process reads the file, merging equals patching, and a LoRA for
another base (or other modules) is refused with one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support.lora import predict, random_lora  # noqa: F401
from support.paths import REPO
from echomimic_core.lora import (LoraError, LoraMetadata, LoraPatcher, LoraWeights, apply_loras, fingerprint,
                                 load_lora, parse_lora_spec, read_lora_metadata, save_lora)
from echomimic_core.lora.fileformat import dtype_name

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(fixtures) -> Path:
    return fixtures / "weights"


@pytest.fixture(scope="module")
def models(weights):
    from echomimic_core.checkpoints import load_models

    return load_models(weights, dtype=torch.float32, device="cpu")






def test_parse_lora_spec():
    assert parse_lora_spec("a.safetensors") == ("a.safetensors", 1.0)
    assert parse_lora_spec("a.safetensors:0.5") == ("a.safetensors", 0.5)
    assert parse_lora_spec("dir/a.safetensors:-1") == ("dir/a.safetensors", -1.0)
    assert parse_lora_spec(r"C:\loras\a.safetensors") == (r"C:\loras\a.safetensors", 1.0)
    assert parse_lora_spec(r"C:\loras\a.safetensors:0.75") == (r"C:\loras\a.safetensors", 0.75)


def test_fingerprint_is_the_same_for_fp16_copies_and_close_for_bf16(models):
    from echomimic_core.lora.fingerprint import compare

    nets = {k: getattr(models, k) for k in ("reference_unet", "denoising_unet", "pose_encoder")}
    base = fingerprint(nets)
    import copy

    half = fingerprint({k: copy.deepcopy(v).half() for k, v in nets.items()})
    bf16 = fingerprint({k: copy.deepcopy(v).bfloat16() for k, v in nets.items()})
    assert half.hash == base.hash and half.structure == base.structure
    assert bf16.hash != base.hash and compare(base, bf16) is None
    assert base.samples.numel() > 1000  # ~4 values per tensor


def test_strength_zero_is_bit_identical_and_unpatch_restores(models):
    before = {k: v.clone() for k, v in models.denoising_unet.state_dict().items()}
    y0 = predict(models)
    lora = random_lora(models, 1)
    with LoraPatcher.attached(models) as p:
        p.set_stack([(lora, 0.0)])
        assert torch.equal(predict(models), y0)
        p.set_stack([(lora, 1.0)])
        y1 = predict(models)
        assert (y1 - y0).abs().max() > 1e-3
        p.set_stack([(lora, 0.0)])  # back to 0 from 1: the exact base again
        assert torch.equal(predict(models), y0)
        p.set_stack([(lora, 0.5)])
    after = models.denoising_unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(predict(models), y0)


def test_stacking_adds_the_deltas_and_remove_keeps_the_others(models):
    a, b = random_lora(models, 2), random_lora(models, 3, rank=3, alpha=3.0)
    key = next(k for k, (m, _) in a.modules.items() if m.ndim == 2)
    net, mod = key
    w0 = getattr(models, net).get_submodule(mod).weight.detach().clone()
    (a1, b1), (a2, b2) = a.modules[key], b.modules[key]
    expect = w0 + 0.7 * (4.0 / 2) * b1 @ a1 - 0.3 * (3.0 / 3) * b2 @ a2
    with apply_loras(models, [(a, 0.7), (b, -0.3)]) as p:
        w = getattr(models, net).get_submodule(mod).weight
        assert torch.allclose(w, expect, atol=1e-5)
        y_ab = predict(models)
        p.remove(b)
        assert [l for l, _ in p.stack] == [a]
        y_a = predict(models)
        p.add(b, -0.3)
        assert torch.equal(predict(models), y_ab)
        assert not torch.equal(y_a, y_ab)
    assert torch.equal(getattr(models, net).get_submodule(mod).weight, w0)


def test_file_round_trip_and_a_fresh_process_gets_the_same_prediction(models, tmp_path, weights):
    lora = random_lora(models, 4)
    path = save_lora(tmp_path / "person.safetensors", lora)
    meta = read_lora_metadata(path)
    assert meta.base_model_hash == fingerprint(models).hash and meta.rank == 2 and meta.alpha == 4.0
    assert meta.networks == ("denoising_unet", "reference_unet")
    back = load_lora(path)
    assert set(back.modules) == set(lora.modules)
    assert all(torch.equal(back.modules[k][0], lora.modules[k][0]) for k in lora.modules)
    with apply_loras(models, [f"{path}:0.8"]):
        expect = predict(models)
    torch.save(expect, tmp_path / "expect.pt")
    code = f"""
import sys, torch
sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}]
from echomimic_core.checkpoints import load_models
from echomimic_core.lora import apply_loras
from support.lora import predict
torch.set_num_threads(1)
m = load_models({str(weights)!r})
apply_loras(m, [{str(path) + ':0.8'!r}])
assert torch.equal(predict(m), torch.load({str(tmp_path / 'expect.pt')!r}))
print("same")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0 and "same" in out.stdout, out.stderr[-2000:]


@pytest.mark.slow
def test_merged_weights_predict_like_base_plus_lora(models, tmp_path, weights):
    from echomimic_core.checkpoints import load_models
    from echomimic_core.lora.merge import main

    lora = random_lora(models, 5)
    path = save_lora(tmp_path / "l.safetensors", lora)
    with apply_loras(models, [(lora, 1.0)]):
        patched = predict(models)
    assert main(["merge", str(weights), str(path), str(tmp_path / "merged")]) == 0
    info = json.loads((tmp_path / "merged" / "lora_merge.json").read_text())
    assert info["base_model_hash"] == lora.metadata.base_model_hash and info["loras"][0]["strength"] == 1.0
    merged = load_models(tmp_path / "merged")
    assert merged.load_report.sources.get("base_unet", 0) == 0  # every key from the merged files
    assert (predict(merged) - patched).abs().max() <= 1e-5
    assert main(["merge", str(weights), str(path), str(weights)]) == 2  # never over the base


def test_a_lora_for_another_base_is_refused_with_one_line(models, tmp_path):
    lora = random_lora(models, 6)
    other = random_lora(models, 6)
    other.fingerprint = type(lora.fingerprint)(lora.fingerprint.structure, "0" * 64,
                                               lora.fingerprint.samples + 0.5, torch.float32)
    other.metadata.base_model = "someone_elses_finetune"
    path = save_lora(tmp_path / "other.safetensors", other)
    w = models.denoising_unet.conv_in.weight
    before = w.detach().clone()
    with pytest.raises(LoraError) as err:
        apply_loras(models, [path])
    msg = str(err.value)
    assert "\n" not in msg and "other.safetensors" in msg and "someone_elses_finetune" in msg
    assert "trained for base model 000000000000" in msg and "sampled weight values differ" in msg
    assert torch.equal(w, before)  # nothing applied
    # different structure (e.g. the demo model): named as such
    other.fingerprint = type(lora.fingerprint)("f" * 64, "1" * 64, lora.fingerprint.samples, torch.float32)
    with pytest.raises(LoraError, match="different network structure"):
        LoraPatcher.attached(models).set_stack([other])
    # the right base but a target module this model does not have
    bad = random_lora(models, 7)
    (a, b) = next(iter(bad.modules.values()))
    bad.modules[("denoising_unet", "down_blocks.0.attentions.0.nonexistent")] = (a, b)
    with pytest.raises(LoraError, match=r"1 target module\(s\) do not match.*nonexistent"):
        apply_loras(models, [bad])
    assert not LoraPatcher.attached(models).stack


def test_bad_files_are_named(tmp_path):
    p = tmp_path / "x.pth"
    p.write_bytes(b"0")
    with pytest.raises(LoraError, match="must be .safetensors"):
        load_lora(p)
    with pytest.raises(LoraError, match="not found"):
        load_lora(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "sd.safetensors"), metadata={"format": "pt"})
    with pytest.raises(LoraError, match="not an EchoMimicV2 LoRA file"):
        load_lora(tmp_path / "sd.safetensors")
