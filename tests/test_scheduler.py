"""DDIM configuration parity against <fixtures>/scheduler (level e)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from echomimic_core.sampling import OFFICIAL_SCHEDULER_KWARGS, get_preset, initial_latents, make_scheduler
from echomimic_core.errors import InputError

TOL = 1e-6


@pytest.fixture(scope="module")
def sched_fixture(fixtures):
    meta = json.loads((fixtures / "scheduler" / "scheduler.json").read_text())
    tensors = load_file(str(fixtures / "scheduler" / "scheduler.safetensors"))
    return meta, tensors


def _from_fixture_config(meta):
    return make_scheduler(meta["config"])


def test_official_kwargs_match_fixture_config(sched_fixture, fixture_config):
    meta, _ = sched_fixture
    for key, value in OFFICIAL_SCHEDULER_KWARGS.items():
        assert meta["config"][key] == value
    built = make_scheduler(fixture_config["noise_scheduler_kwargs"]).config
    for key, value in meta["config"].items():
        if not key.startswith("_"):
            assert built[key] == value, key


@pytest.mark.parametrize("source", ["fixture", "official_default"])
def test_timesteps_for_every_listed_step_count(sched_fixture, source):
    meta, _ = sched_fixture
    keys = [k for k in meta if k.startswith("timesteps_")]
    assert keys
    for key in keys:
        n = int(key.split("_")[1])
        sched = _from_fixture_config(meta) if source == "fixture" else make_scheduler()
        sched.set_timesteps(n)
        assert sched.timesteps.tolist() == meta[key], key
    assert float(make_scheduler().init_noise_sigma) == meta["init_noise_sigma"]


def test_alphas_and_betas(sched_fixture):
    meta, t = sched_fixture
    sched = _from_fixture_config(meta)
    assert (sched.alphas_cumprod.float() - t["alphas_cumprod"]).abs().max().item() <= TOL
    # betas = 1 - a_t / a_{t-1} of the zero-SNR rescaled schedule: a ratio of small, close numbers near the end,
    # so float32 rounding of the cumulative product (which differs between CPUs' vectorised kernels: 3.0e-6 at
    # beta ~0.3 measured on one machine) is amplified; sampling reads alphas_cumprod, held to TOL above
    torch.testing.assert_close(sched.betas.float(), t["betas"], rtol=2e-5, atol=TOL)
    assert float(sched.final_alpha_cumprod) == meta["final_alpha_cumprod"]
    assert float(sched.alphas_cumprod[-1]) == 0.0


def test_step_chain(sched_fixture):
    meta, t = sched_fixture
    sched = _from_fixture_config(meta)
    sched.set_timesteps(len(meta["timesteps_6"]))
    sample = t["step_sample_in_0"]
    for i, timestep in enumerate(sched.timesteps):
        out = sched.step(t[f"step_model_output_{i}"], timestep, sample, eta=0.0)
        assert (out.pred_original_sample - t[f"step_pred_original_sample_{i}"]).abs().max().item() <= TOL
        assert (out.prev_sample - t[f"step_prev_sample_{i}"]).abs().max().item() <= TOL
        sample = t[f"step_prev_sample_{i}"]  # teacher-forced chain, as recorded


def test_scheduler_objects_are_independent():
    a, b = make_scheduler(), make_scheduler()
    a.set_timesteps(6)
    b.set_timesteps(30)
    assert len(a.timesteps) == 6 and len(b.timesteps) == 30


def test_bad_prediction_type_rejected():
    with pytest.raises(InputError):
        make_scheduler({"prediction_type": "flow"})


def test_presets():
    assert (get_preset("normal").steps, get_preset("normal").guidance_scale) == (30, 2.5)
    assert (get_preset("acc").steps, get_preset("acc").guidance_scale, get_preset("acc").variant) == (6, 1.0, "acc")
    with pytest.raises(InputError):
        get_preset("turbo")


def test_initial_noise_matches_official(fixtures):
    call = json.loads((fixtures / "pipeline" / "pipeline.json").read_text())["call"]
    t = load_file(str(fixtures / "pipeline" / "pipeline.safetensors"))
    for prefix in ("cfg", "nocfg_patched"):
        raw = t[f"{prefix}_raw_noise"]
        ours = initial_latents(tuple(raw.shape), call["seed"], torch.float32)
        assert torch.equal(ours, t[f"{prefix}_init_latents"])
        assert torch.equal(ours, raw.clamp(-1.5, 1.5))
    # drawing does not touch the global generator
    state = torch.random.get_rng_state()
    initial_latents((1, 4, 2, 3, 3), 7)
    assert torch.equal(state, torch.random.get_rng_state())
