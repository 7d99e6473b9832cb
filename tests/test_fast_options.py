"""The fast options that change the output on purpose: DeepCache-style reuse of deep UNet features
(``deep_cache_interval``) and classifier-free guidance on the first steps only (``guidance_fraction``).
Their quality cost is measured by bench/demo_quality.py and bench/fast_quality.py (README); here: the wiring."""

from __future__ import annotations

import pytest
import torch

from echomimic_core.errors import InputError
from echomimic_core.settings import GenerationSettings
from support.engine import fixture_inputs, fixture_pipeline

checkpoints = pytest.importorskip("echomimic_core.checkpoints")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe(fixtures):
    return fixture_pipeline(fixtures)


@pytest.fixture(scope="module")
def inputs(fixtures):
    image, audio, poses, meta = fixture_inputs(fixtures)
    settings = GenerationSettings(width=meta["width"], height=meta["height"], num_frames=meta["video_length"],
                                  steps=4, guidance_scale=2.5, seed=meta["seed"], context_frames=meta["context_frames"],
                                  context_overlap=meta["context_overlap"])
    return image, audio, poses, settings


@pytest.mark.parametrize("change,match", [
    ({"guidance_fraction": 0}, "guidance fraction"), ({"guidance_fraction": 1.5}, "guidance fraction"),
    ({"guidance_fraction": float("nan")}, "guidance fraction"), ({"deep_cache_interval": 0}, "deep cache"),
])
def test_settings_refuse_bad_values(change, match):
    with pytest.raises(InputError, match=match):
        GenerationSettings(**change).checked()


def test_guided_steps_rule():
    def guided(**kw):
        return GenerationSettings(steps=4, guidance_scale=2.5, **kw).checked().guided_steps()

    assert guided() == [True] * 4
    assert guided(guidance_fraction=0.5) == [True, True, False, False]
    assert guided(guidance_fraction=0.3) == [True, True, False, False]  # ceil(1.2)
    assert guided(guidance_fraction=0.01) == [True, False, False, False]
    assert GenerationSettings(steps=3, guidance_scale=1.0).checked().guided_steps() == [False] * 3


def test_shallow_pass_on_its_own_deep_features_is_the_full_pass(pipe, inputs):
    """The outermost level alone, fed the deep features the full pass computed for the same input, must give
    the full pass's prediction: this pins the wiring of the shallow path (skips, order, last up block)."""
    from echomimic_core.models import DeepFeatures

    unet = pipe.denoising_unet
    assert unet.supports_deep_features()
    g = torch.Generator().manual_seed(0)
    b, f, h = 2, 3, 8
    x = torch.randn(b, unet.config.in_channels, f, h, h, generator=g)
    audio = torch.randn(b, f, 5, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        deep = DeepFeatures()
        full = unet(x, torch.tensor(500), audio=audio, deep_features=deep).sample
        assert deep.features is not None and deep.features.shape[0] == b * f
        shallow = unet(x, torch.tensor(500), audio=audio, deep_features=DeepFeatures(reuse=deep.features)).sample
        other = unet(x, torch.tensor(10), audio=audio, deep_features=DeepFeatures(reuse=deep.features)).sample
    assert (shallow - full).abs().max().item() <= 1e-5
    assert (other - full).abs().max().item() > 1e-3  # the outer level did run again (new timestep)


def test_feature_store_averages_per_frame_and_serves_windows():
    from echomimic_core.sampling.deep_cache import DeepFeatureStore

    store = DeepFeatureStore()
    store.begin(5)
    windows = [[0, 1, 2], [2, 3, 4]]
    feats = torch.arange(2 * 2 * 3, dtype=torch.float32).view(2 * 2 * 3, 1, 1, 1).expand(-1, 2, 1, 1)
    store.add(windows, feats, branches=2)   # rows: [uncond w1 (0,1,2), uncond w2 (3,4,5), cond w1, cond w2]
    store.finish(torch.float32)
    assert store.ready(2) and store.features.shape == (2, 5, 2, 1, 1)
    assert store.features[0, :, 0, 0, 0].tolist() == [0, 1, (2 + 3) / 2, 4, 5]
    got = store.gather([[1, 2, 3]], branches=2)[:, 0, 0, 0].tolist()
    assert got == [1, 2.5, 4, 7, 8.5, 10]
    assert store.gather([[1, 2, 3]], branches=1)[:, 0, 0, 0].tolist() == [7, 8.5, 10]   # the cond branch


def test_deep_cache_runs_shallow_steps_between_full_ones(pipe, inputs, monkeypatch):
    image, audio, poses, settings = inputs
    unet = pipe.denoising_unet
    calls = []
    real = type(unet)._run_outer_level

    def spy(self, *args, **kwargs):
        calls.append(args[-1].shape)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(unet), "_run_outer_level", spy)
    exact = pipe.generate(image, audio, poses, settings, decode=False)
    assert not calls
    cached = pipe.generate(image, audio, poses, settings.replace(deep_cache_interval=2), decode=False)
    windows_per_step = [len(b) for b in cached.windows_per_step]
    assert len(calls) == sum(len(pipe.plan(image, audio, poses, settings.replace(deep_cache_interval=2)).batches[i])
                             for i in (1, 3))
    assert windows_per_step[1] > 0 and torch.isfinite(cached.latents).all()
    assert not torch.equal(cached.latents, exact.latents)


def test_guidance_fraction_drops_the_uncond_half_on_later_steps(pipe, inputs):
    image, audio, poses, settings = inputs
    settings = settings.replace(window_batch_size=1)
    full = pipe.generate(image, audio, poses, settings, decode=False)
    half = pipe.generate(image, audio, poses, settings.replace(guidance_fraction=0.5), decode=False)
    per_step = len(full.unet_calls) // 4
    assert set(full.unet_calls) == {2}
    assert half.unet_calls == [2] * (2 * per_step) + [1] * (2 * per_step)
    assert torch.isfinite(half.latents).all() and not torch.equal(half.latents, full.latents)


def test_cli_flags_reach_the_settings():
    import argparse

    from echomimic_core.commands import generate

    parser = argparse.ArgumentParser()
    generate.add_arguments(parser)
    args = parser.parse_args(["--models", "M", "--image", "I", "--audio", "A", "--out", "o.mp4",
                              "--cfg-fraction", "0.5", "--deep-cache", "3"])
    s = generate.settings_from_args(args)
    assert s.guidance_fraction == 0.5 and s.deep_cache_interval == 3
    base = ["--models", "M", "--image", "I", "--audio", "A", "--out", "o.mp4", "--fast"]
    fast = generate.settings_from_args(parser.parse_args(base))
    assert (fast.context_schedule, fast.deep_cache_interval) == ("no_overlap", 2)
    assert generate.settings_from_args(parser.parse_args(base + ["--deep-cache", "1"])).deep_cache_interval == 1


def test_cli_labels_name_the_flags():
    from echomimic_core.commands.generate import FLAG_LABELS

    with pytest.raises(InputError, match="--cfg-fraction"):
        GenerationSettings(guidance_fraction=2.0).checked(labels=FLAG_LABELS)
    with pytest.raises(InputError, match="--deep-cache"):
        GenerationSettings(deep_cache_interval=0).checked(labels=FLAG_LABELS)
