"""The sampling engine: settings validation, the scheduler registry, the exact speed-ups (each equal to the plain
path within 1e-5 on the tiny official-layout networks), the step-end callback, the compile fallback and the
thread policy."""

from __future__ import annotations

import warnings

import pytest
import torch

from echomimic_core.errors import InputError
from echomimic_core.models import FrameHead
from echomimic_core.sampling.frame_heads import FrameHeadShare, frames_repeat
from echomimic_core.settings import GenerationSettings, video_length
from support.engine import fixture_inputs, fixture_pipeline

checkpoints = pytest.importorskip("echomimic_core.checkpoints")

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5
PLAIN = dict(window_batch_size=1, pose_feature_cache_mb=0.0, cache_reference_kv=False, skip_uncond_audio=False,
             share_frame_heads=False)


@pytest.fixture(scope="module")
def pipe(fixtures):
    return fixture_pipeline(fixtures)


@pytest.fixture(scope="module")
def inputs(fixtures):
    return fixture_inputs(fixtures)


def _settings(meta, **kw):
    base = dict(width=meta["width"], height=meta["height"], num_frames=meta["video_length"], steps=2,
                guidance_scale=2.5, seed=meta["seed"], context_frames=meta["context_frames"],
                context_overlap=meta["context_overlap"])
    return GenerationSettings(**{**base, **kw})


def _first_steps(pipe, inputs, steps=2, **kw):
    """Noise predictions of the first ``steps`` steps (latents carried as the run does)."""
    image, audio, poses, meta = inputs
    plan = pipe.plan(image, audio, poses, _settings(meta, steps=max(steps, 2), **kw))
    cond = pipe.prepare(plan)
    latents, preds = plan.latents, []
    for i in range(steps):
        v, latents = pipe.denoise_step(plan, cond, i, latents)
        preds.append(v.clone())
    return plan, preds


def _maxdiff(a, b):
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def plain(pipe, inputs):
    return _first_steps(pipe, inputs, **PLAIN)


@pytest.mark.parametrize("name,speedup", [
    ("window batching", dict(window_batch_size=3)),
    ("pose features cached", dict(pose_feature_cache_mb=64.0)),
    ("pose features partly cached", dict(pose_feature_cache_mb=0.05)),
    ("reference K/V cached", dict(cache_reference_kv=True)),
    ("uncond audio skipped", dict(skip_uncond_audio=True)),
    ("frame heads shared", dict(share_frame_heads=True)),
    ("frame heads shared, windows batched", dict(share_frame_heads=True, window_batch_size=2)),
    ("all exact speed-ups (defaults)", dict(window_batch_size=None, pose_feature_cache_mb=None,
                                            cache_reference_kv=True, skip_uncond_audio=True, share_frame_heads=True)),
])
def test_exact_speedup_equals_plain_path(pipe, inputs, plain, name, speedup):
    plan0, ref = plain
    plan, got = _first_steps(pipe, inputs, **{**PLAIN, **speedup})
    if "partly" in name:
        assert 0 < plan.pose_feature_frames < plan.num_frames
    if "batching" in name:
        assert max(len(b) for b in plan.batches[0]) == 3 and plan0.batches[0] != plan.batches[0]
    if "heads" in name:
        assert frames_repeat(plan.schedule[0])  # the fixture's windows overlap: heads are really shared
    errors = [_maxdiff(a, b) for a, b in zip(ref, got)]
    print(f"{name}: max abs prediction error per step {errors}")
    assert max(errors) <= TOL


def test_frame_head_share_computes_each_frame_once_and_keeps_only_shared_ones():
    windows = [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 0, 1]]
    batches = [[windows[0]], [windows[1], windows[2]]]
    share, computed = FrameHeadShare(batches), []

    def compute(frames):  # rows (branch, frame): value = 100 * branch + frame
        computed.extend(frames)
        rows = torch.tensor([100.0 * r + k for r in range(2) for k in frames]).view(-1, 1, 1, 1)
        return FrameHead(inputs=rows, hidden=-rows)

    for batch in batches:
        head = share.heads(batch, 2, compute)
        want = torch.tensor([100.0 * r + k for r in range(2) for w in batch for k in w])
        assert torch.equal(head.inputs.flatten(), want) and torch.equal(head.hidden.flatten(), -want)
        kept = set(share._kept)
        assert kept <= {0, 1, 3}  # only frames a later batch needs again
    assert sorted(computed) == list(range(8)) and not share._kept


def test_null_audio_constant_is_the_attention_output():
    """Zero audio tokens: every key equal -> uniform softmax -> output to_out(to_v(0)) for every query, also
    with biased key/value projections."""
    from diffusers.models.attention_processor import Attention

    from echomimic_core.models.attention import AudioCrossAttnProcessor, EchoAttentionContext

    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=8, heads=2, dim_head=8, bias=True, out_bias=True)
    proc = AudioCrossAttnProcessor("blk", scale=3.0)
    x = torch.randn(6, 5, 16)  # b=2 elements x f=3 frames
    tokens = torch.cat([torch.zeros(3, 4, 8), torch.randn(3, 4, 8)])
    full = proc(attn, x, tokens, echo_context=EchoAttentionContext(num_frames=3))
    cache = {}
    fast = proc(attn, x, tokens, echo_context=EchoAttentionContext(num_frames=3, audio_null_rows=(True, False),
                                                                   cache=cache))
    assert _maxdiff(full, fast) <= 1e-6 and "null_audio:blk" in cache
    assert _maxdiff(full[:3], full[0, :1]) <= 1e-6  # the same vector for every query of the zero-audio half


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpm++2m", "unipc", "lcm"])
def test_every_registered_scheduler_runs_two_steps(pipe, inputs, scheduler):
    from echomimic_core.sampling.scheduler import SCHEDULERS

    assert scheduler in SCHEDULERS
    image, audio, poses, meta = inputs
    res = pipe.generate(image, audio, poses, _settings(meta, scheduler=scheduler, num_frames=14), decode=False)
    assert len(res.timesteps) == 2 and res.settings.scheduler == scheduler
    assert torch.isfinite(res.latents).all()
    cfg = pipe.plan(image, audio, poses, _settings(meta, scheduler=scheduler)).scheduler.config
    assert (cfg.prediction_type, cfg.rescale_betas_zero_snr, cfg.timestep_spacing) == ("v_prediction", True, "trailing")


def test_multistep_scheduler_steps_once_per_timestep(pipe, inputs):
    image, audio, poses, meta = inputs
    plan = pipe.plan(image, audio, poses, _settings(meta, scheduler="dpm++2m", num_frames=14, steps=3))
    cond = pipe.prepare(plan)
    latents = plan.latents
    for i in range(3):
        _, latents = pipe.denoise_step(plan, cond, i, latents)
        assert plan.scheduler.step_index == i + 1  # one step call over the whole latent per timestep


def test_callback_on_step_end_replaces_latents(pipe, inputs):
    image, audio, poses, meta = inputs
    seen = []

    def cb(p, i, t, kw):
        seen.append((i, t, tuple(kw["noise_pred"].shape)))
        return {"latents": torch.zeros_like(kw["latents"])}

    res = pipe.generate(image, audio, poses, _settings(meta, num_frames=12, steps=2), decode=False,
                        callback_on_step_end=cb)
    assert [s[0] for s in seen] == [0, 1] and seen[0][1] == res.timesteps[0]
    assert torch.count_nonzero(res.latents) == 0


def test_compile_failure_falls_back_to_eager(pipe, inputs, monkeypatch):
    image, audio, poses, meta = inputs
    settings = _settings(meta, num_frames=12, steps=1)
    eager = pipe.generate(image, audio, poses, settings, decode=False)

    def broken(module, *a, **k):
        def call(*args, **kwargs):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    pipe._compiled = None
    with pytest.warns(UserWarning, match="torch.compile"):
        res = pipe.generate(image, audio, poses, settings.replace(compile=True), decode=False)
    pipe._compiled = None
    assert torch.equal(res.latents, eager.latents)


@pytest.mark.parametrize("change,match", [
    ({"width": 8192}, "at most"), ({"height": 12}, "multiples of 8"), ({"steps": 0}, "steps"),
    ({"steps": 5000}, "at most"), ({"guidance_scale": float("inf")}, "guidance"), ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"), ({"fps": 0}, "fps"), ({"fps": 1000}, "fps"), ({"context_overlap": 12}, "overlap"),
    ({"decode_chunk_size": 0}, "decode chunk"), ({"window_batch_size": 0}, "window batch"),
    ({"scheduler": "heun"}, "scheduler"), ({"preset": "turbo"}, "preset"), ({"context_schedule": "x"}, "schedule"),
    ({"pose_feature_cache_mb": -1}, "pose feature cache"),
])
def test_settings_validation(change, match):
    with pytest.raises(InputError, match=match):
        GenerationSettings(**change).checked()


def test_settings_defaults_and_labels():
    s = GenerationSettings().checked("acc")
    assert (s.steps, s.guidance_scale, s.seed, s.preset) == (6, 1.0, 420, "acc")
    assert GenerationSettings(context_schedule="no_overlap").checked().context_overlap == 0
    with pytest.raises(InputError, match="--steps"):
        GenerationSettings(steps=0).checked(labels={"steps": "--steps"})


def test_video_length_rule():
    assert video_length(None, 30, 20) == 20 and video_length(None, 12, 15) == 12
    assert video_length(50, 30, 40) == 30  # clipped to the audio
    with pytest.raises(InputError, match="pose sequence has 8"):
        video_length(9, 30, 8)


def test_uncond_rule_is_one_helper():
    from echomimic_core.sampling.guidance import mask_conditions

    a, p = torch.ones(4, 3, 2, 5), torch.ones(4, 6, 3, 2, 2)
    a2, p2, mask = mask_conditions(a, p, [False, True, True, True], pose_keep=torch.tensor([1, 1, 0, 1]).bool())
    assert mask == (False, True, True, True)
    assert a2.flatten(1).sum(1).tolist() == [0, 30, 30, 30]
    assert p2.flatten(1).sum(1).tolist() == [0, 72, 0, 72]


def test_thread_policy(monkeypatch):
    from echomimic_core import threads

    monkeypatch.delenv("ECHOMIMIC_THREADS", raising=False)
    assert threads.choose_threads(None, threads.latent_tokens(64, 64, 12, 2)) == 1  # the demo: tiny work
    assert threads.choose_threads(3, 10**9) == 3
    monkeypatch.setenv("ECHOMIMIC_THREADS", "2")
    assert threads.choose_threads(None, 10) == 2
    assert 1 <= threads.default_threads(10**9) <= threads.available_cpus()
    with pytest.raises(InputError):
        threads.choose_threads(0, 10)


def test_no_warnings_on_the_plain_run(pipe, inputs):
    image, audio, poses, meta = inputs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.generate(image, audio, poses, _settings(meta, num_frames=12, steps=1), decode=False)


def test_heap_trimmer_trims_every_nth_unit(monkeypatch):
    from echomimic_core import heap

    calls = []
    monkeypatch.setattr(heap, "trim_heap", lambda: calls.append(1))
    trimmer = heap.HeapTrimmer(16)
    for _ in range(10):
        trimmer.tick(4)          # 40 frames in chunks of 4: trims at 16 and 32
    assert len(calls) == 2
    heap.HeapTrimmer(1, enabled=False).tick(5)
    assert len(calls) == 2
