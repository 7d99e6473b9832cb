"""Behaviour of the networks beyond parity: training switches, masks, reference semantics, checkpointing,
processors. Tiny random networks built from the fixture configs (no sizes hard-coded)."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch

from echomimic_core.errors import InputError
from echomimic_core.models import (AudioCrossAttnProcessor, DenoisingUNet3DModel, ReferenceBank,
                                   ReferenceReadProcessor, ReferenceUNet2DModel, ReferenceWriteProcessor,
                                   SelfAttnProcessor, denoising_unet_config, is_motion_module_key,
                                   official_reference_order, reference_pairing, reference_unet_config,
                                   split_motion_state_dict)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def configs(fixtures):
    weights = fixtures / "weights"
    base = json.loads((weights / "sd-image-variations-diffusers" / "unet" / "config.json").read_text())
    extra = json.loads((weights / "inference_config.json").read_text())["unet_additional_kwargs"]
    return base, extra


@pytest.fixture(scope="module")
def nets(configs):
    base, extra = configs
    torch.manual_seed(0)
    ref = ReferenceUNet2DModel(**reference_unet_config(base)).eval()
    den = DenoisingUNet3DModel(**denoising_unet_config(base, extra)).eval()
    with torch.no_grad():  # make the zero-initialised motion-module outputs matter
        for name, p in den.named_parameters():
            if "proj_out" in name and "motion_modules" in name:
                p.normal_(0, 0.05)
    return ref, den


def _inputs(den, b=1, f=3, h=None, w=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = den.config
    levels = 2 ** (len(cfg.block_out_channels) - 1)
    h = h or levels
    w = w or levels
    x = torch.randn(b, cfg.in_channels, f, h, w, generator=g)
    audio = torch.randn(b, f, 5, cfg.cross_attention_dim, generator=g)
    pose = torch.randn(b, cfg.block_out_channels[0], f, h, w, generator=g) * 0.1
    return x, audio, pose


def _bank(ref, h, w, seed=2):
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(1, ref.config.in_channels, h, w, generator=g)
    with torch.no_grad():
        return ref(lat, 0).reference_bank


def _run(den, x, t=500, **kw):
    with torch.no_grad():
        return den(x, t, **kw).sample


@pytest.mark.slow
def test_processors_installed_and_no_kwarg_warnings(nets, caplog):
    ref, den = nets
    for path, block in ref.transformer_blocks().items():
        assert isinstance(block.attn1.processor, ReferenceWriteProcessor) and block.attn1.processor.name == path
        assert block.attn2 is None and block.norm2 is None
    for path, block in den.transformer_blocks().items():
        assert isinstance(block.attn1.processor, ReferenceReadProcessor) and block.attn1.processor.name == path
        assert isinstance(block.attn2.processor, AudioCrossAttnProcessor)
        assert block.attn2.processor.scale == den.config.audio_feature_ratio
    x, audio, pose = _inputs(den)
    bank = _bank(ref, x.shape[-2], x.shape[-1])
    with caplog.at_level(logging.WARNING):
        _run(den, x, audio=audio, pose_features=pose, reference_bank=bank)
    assert not [r for r in caplog.records if "not expected" in r.getMessage()]
    den.set_attn_processor(SelfAttnProcessor())
    den.set_default_attn_processor()
    assert all(isinstance(b.attn1.processor, ReferenceReadProcessor) for b in den.transformer_blocks().values())


def test_set_default_attn_processor_restores_the_motion_modules(nets):
    """A stock diffusers processor set everywhere is replaced again everywhere, motion modules included."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    _, den = nets
    motion = [m for name, m in den.named_modules() if isinstance(m, Attention) and "motion_modules." in name]
    assert motion and all(isinstance(m.processor, SelfAttnProcessor) for m in motion)
    den.set_attn_processor(AttnProcessor2_0())
    assert all(isinstance(m.processor, AttnProcessor2_0) for m in motion)
    den.set_default_attn_processor()
    assert all(type(m.processor) is SelfAttnProcessor for m in motion)
    assert all(isinstance(b.attn2.processor, AudioCrossAttnProcessor) for b in den.transformer_blocks().values())
    assert not [m for m in den.modules() if isinstance(m, Attention) and isinstance(m.processor, AttnProcessor2_0)]


def test_reference_unet_state_dict_has_no_removed_modules(nets):
    ref, den = nets
    keys = ref.state_dict().keys()
    assert not [k for k in keys if re.search(r"transformer_blocks\.\d+\.(attn2|norm2)\.|^conv_norm_out|^conv_out", k)]
    assert any(k.startswith("conv_out.") for k in den.state_dict())


def test_motion_module_keys_and_split(nets):
    _, den = nets
    sd = den.state_dict()
    motion, rest = split_motion_state_dict(sd)
    assert len(motion) + len(rest) == len(sd) and motion and all(is_motion_module_key(k) for k in motion)
    pattern = re.compile(
        r"^(down_blocks\.\d+|up_blocks\.\d+|mid_block)\.motion_modules\.\d+\.temporal_transformer\."
        r"(norm|proj_in|proj_out|transformer_blocks\.0\.(attention_blocks\.[01]\.(to_q|to_k|to_v|to_out\.0|"
        r"pos_encoder)|norms\.[01]|ff\.net\.0\.proj|ff\.net\.2|ff_norm))\.(weight|bias|pe)$")
    bad = [k for k in motion if not pattern.match(k)]
    assert not bad, bad[:5]
    assert any(k.startswith("mid_block.motion_modules.0.") for k in motion)
    assert set(den.motion_module_state_dict()) == set(motion)


@pytest.mark.slow
def test_audio_switch_and_region_mask(nets):
    ref, den = nets
    x, audio, pose = _inputs(den, f=2)
    bank = _bank(ref, x.shape[-2], x.shape[-1])
    common = dict(pose_features=pose, reference_bank=bank)
    full = _run(den, x, audio=audio, **common)
    muted = _run(den, x, audio=audio, audio_enabled=False, **common)
    no_audio = _run(den, x, audio=None, **common)
    zeros = _run(den, x, audio=torch.zeros_like(audio), **common)
    assert torch.equal(muted, no_audio)
    assert not torch.allclose(muted, zeros)  # zero audio still adds ratio * to_out bias (official)
    assert not torch.allclose(full, zeros)
    b, _, f, h, w = x.shape
    ones = torch.ones(b, f, h, w)
    for mode in ("nearest", "area"):
        assert torch.equal(_run(den, x, audio=audio, audio_region_mask=ones, region_mask_mode=mode, **common), full)
        assert torch.equal(_run(den, x, audio=audio, audio_region_mask=ones * 0, region_mask_mode=mode, **common),
                           muted)
    half = ones.clone()
    half[..., : w // 2] = 0
    partial = _run(den, x, audio=audio, audio_region_mask=half, **common)
    assert not torch.allclose(partial, full) and not torch.allclose(partial, muted)
    with pytest.raises(InputError):
        _run(den, x, audio=audio, audio_region_mask=torch.ones(b, f + 1, h, w), **common)


@pytest.mark.slow
def test_reference_mask_semantics(nets):
    ref, den = nets
    x, audio, pose = _inputs(den, b=2, f=2)
    bank = _bank(ref, x.shape[-2], x.shape[-1])
    none = _run(den, x, audio=audio, pose_features=pose)
    off = _run(den, x, audio=audio, pose_features=pose, reference_bank=bank, reference_mask=[False, False])
    on = _run(den, x, audio=audio, pose_features=pose, reference_bank=bank)
    mixed = _run(den, x, audio=audio, pose_features=pose, reference_bank=bank, reference_mask=[False, True])
    assert torch.equal(none, off)
    assert not torch.allclose(on, off)
    torch.testing.assert_close(mixed[0], off[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[1], on[1], atol=1e-5, rtol=0)
    # a bank with batch 2 ([v, v], the official CFG copy) equals the broadcast batch-1 bank
    doubled = ReferenceBank({k: torch.cat([v, v]) for k, v in bank.features.items()})
    torch.testing.assert_close(_run(den, x, audio=audio, pose_features=pose, reference_bank=doubled), on,
                               atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        bad = ReferenceBank({k: torch.cat([v, v, v]) for k, v in bank.features.items()})
        _run(den, x, audio=audio, reference_bank=bad)


def test_non_square_and_non_divisible_latents(nets):
    ref, den = nets
    levels = 2 ** (len(den.config.block_out_channels) - 1)
    h, w = levels + 2, 2 * levels + 3  # not divisible: exercises the forced upsample sizes
    x, audio, pose = _inputs(den, f=2, h=h, w=w)
    out = ref(torch.randn(1, ref.config.in_channels, h, w), 0)
    assert out.sample.shape[-2:] == (h, w)
    pred = _run(den, x, audio=audio, pose_features=pose, reference_bank=out.reference_bank)
    assert pred.shape == (1, den.config.out_channels, 2, h, w)


def test_window_longer_than_position_table_is_refused(nets):
    _, den = nets
    max_len = den.config.motion_module_kwargs["temporal_position_encoding_max_len"]
    x, _, _ = _inputs(den, f=max_len + 1)
    with pytest.raises(ValueError, match="position"):
        _run(den, x)


@pytest.mark.slow
def test_gradient_checkpointing_same_gradients(configs):
    base, extra = configs
    torch.manual_seed(3)
    ref = ReferenceUNet2DModel(**reference_unet_config(base))
    den = DenoisingUNet3DModel(**denoising_unet_config(base, extra))
    x, audio, pose = _inputs(den, f=2)

    def grads():
        ref.zero_grad()
        den.zero_grad()
        bank = ref(torch.ones(1, ref.config.in_channels, *x.shape[-2:]), 0).reference_bank
        loss = den(x, 10, audio=audio, pose_features=pose, reference_bank=bank).sample.square().mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in list(den.named_parameters()) +
                               [("ref." + n, p) for n, p in ref.named_parameters()] if p.grad is not None}

    loss_a, ga = grads()
    assert any(k.startswith("ref.") for k in ga)  # the ReferenceNet gets gradients through the bank
    assert den._supports_gradient_checkpointing and ref._supports_gradient_checkpointing
    den.enable_gradient_checkpointing()
    ref.enable_gradient_checkpointing()
    loss_b, gb = grads()
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert ga.keys() == gb.keys()
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-5, rtol=1e-4, msg=k)


def test_official_order_and_pairing(nets):
    ref, den = nets
    order = official_reference_order([("down_blocks.0.a", 32), ("mid_block.a", 64), ("up_blocks.1.a", 32),
                                       ("down_blocks.1.a", 64)])
    assert order == ["down_blocks.1.a", "mid_block.a", "down_blocks.0.a", "up_blocks.1.a"]
    pairing = reference_pairing(ref, den)
    assert pairing and all(k == v for k, v in pairing.items())
    bank = _bank(ref, 4, 4)
    assert set(bank.remap(pairing).keys()) == set(bank.keys())


def test_xformers_toggle(nets):
    _, den = nets
    try:
        import xformers  # noqa: F401
    except ImportError:
        with pytest.raises(ModuleNotFoundError):
            den.enable_xformers_memory_efficient_attention()
    den.disable_xformers_memory_efficient_attention()
    assert all(b.attn1.processor.backend == "sdpa" for b in den.transformer_blocks().values())


def test_trainer_parameter_groups(nets):
    _, den = nets
    names = {k for k, _ in den.named_parameters()}
    motion = {k for k, _ in den.named_motion_module_parameters()}
    spatial = {k for k, _ in den.named_spatial_parameters()}
    audio = {k for k, _ in den.named_audio_attention_parameters()}
    assert motion | spatial == names and not motion & spatial
    assert audio and audio <= spatial
    assert all(re.search(r"transformer_blocks\.\d+\.(attn2|norm2)\.", k) for k in audio)
    assert len([k for k in audio if k.endswith("attn2.to_k.weight")]) == len(den.transformer_blocks())


@pytest.mark.slow
def test_diffusers_save_and_from_pretrained(nets, tmp_path):
    """The networks are ordinary diffusers models: config-driven save/load keeps weights and processors."""
    ref, den = nets
    for model in (ref, den):
        folder = tmp_path / type(model).__name__
        model.save_pretrained(folder)
        again = type(model).from_pretrained(folder)
        a, b = model.state_dict(), again.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert {type(p) for p in again.attn_processors.values()} == {type(p) for p in model.attn_processors.values()}


def test_row_chunked_feed_forward_equals_the_whole_pass():
    """The CPU row chunking of the feed-forward (models/feed_forward.py) is the same per-token computation: equal
    outputs and gradients, and the state-dict keys of the wrapped diffusers FeedForward."""
    from diffusers.models.attention import FeedForward

    from echomimic_core.models.feed_forward import CPU_FEED_FORWARD_BYTES, RowChunkedFeedForward

    torch.manual_seed(0)
    plain = FeedForward(16, activation_fn="geglu")
    chunked = RowChunkedFeedForward(plain)
    assert list(chunked.state_dict()) == list(plain.state_dict())
    rows = CPU_FEED_FORWARD_BYTES // (chunked.inner_features * 4)
    x = torch.randn(3, rows + 37, 16, requires_grad=True)  # several chunks, the last one partial
    want = plain(x)
    (g_want,) = torch.autograd.grad(want.square().sum(), x)
    got = chunked(x)
    (g_got,) = torch.autograd.grad(got.square().sum(), x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-6 and (g_got - g_want).abs().max().item() <= 1e-5


def test_attention_over_the_kernel_batch_limit_runs_in_chunks_with_the_same_values(monkeypatch):
    """Batches past MAX_ATTENTION_BATCH (sequence, head) pairs - the CUDA grid limit that the temporal attention of
    a batched 768x768 run crosses - are split into several kernel calls; every value stays what one call gives."""
    import torch.nn.functional as F

    from echomimic_core.models.attention import MAX_ATTENTION_BATCH, multihead_attention

    torch.manual_seed(0)
    heads = 4
    q, k, v = (torch.randn(37, n, heads * 8) for n in (12, 12, 12))
    whole = multihead_attention(q, k, v, heads)
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape[0])
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    chunked = multihead_attention(q, k, v, heads, max_batch=10 * heads)
    assert calls == [10, 10, 10, 7]
    assert torch.allclose(chunked, whole, atol=1e-6, rtol=0)
    calls.clear()
    multihead_attention(q, k, v, heads, max_batch=37 * heads)  # at the limit: one call
    assert calls == [37]
    assert MAX_ATTENTION_BATCH == 2**16 - 1
