"""Sampler mechanics with small stand-in networks (no checkpoints needed): windows, CFG batches,
averaging, streaming, progress, cancellation and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from echomimic_core.errors import InputError, Interrupted
from echomimic_core.models import ReferenceBank
from echomimic_core.pipeline import EchoMimicPipeline, PoseSource, preprocess_reference
from echomimic_core.sampling import initial_latents, make_scheduler, window_schedule



pytestmark = pytest.mark.usefixtures("one_thread")

class _Dist:
    def __init__(self, mean):
        self.mean = mean


class _Out:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class FakeVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 8, stride=8)
        self.dec = nn.ConvTranspose2d(4, 3, 8, stride=8)
        self.decoded_batches = []

    def encode(self, x):
        return _Out(latent_dist=_Dist(self.enc(x)))

    def decode(self, z):
        self.decoded_batches.append(z.shape[0])
        return _Out(sample=torch.tanh(self.dec(z)))


class FakePoseEncoder(nn.Module):
    """Per-frame like the real one: a (1,8,8) conv3d."""

    def __init__(self, c0=6):
        super().__init__()
        self.conv = nn.Conv3d(3, c0, (1, 8, 8), stride=(1, 8, 8))

    def forward(self, x):
        return self.conv(x)


class FakeReference(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(4, 4, 1)

    def forward(self, latents, timestep):
        assert int(timestep) == 0
        return _Out(reference_bank=ReferenceBank({"block": self.proj(latents).flatten(2).transpose(1, 2)}))  # [1, hw, 4]


class FakeDenoiser(nn.Module):
    def __init__(self, c0=6, tokens=5, ch=8):
        super().__init__()
        self.pose = nn.Conv3d(c0, 4, 1)
        self.audio = nn.Linear(ch, 4)
        self.mix = nn.Conv3d(4, 4, (3, 1, 1), padding=(1, 0, 0))  # mixes frames, like a motion module
        self.calls = []
        self.config = _Out(in_channels=4)

    def forward(self, sample, timestep, audio, pose_features, reference_bank, reference_mask, reference_dtype,
                **speedups):
        b, c, f, h, w = sample.shape
        assert audio.shape[:2] == (b, f) and pose_features.shape[0] == b and pose_features.shape[2] == f
        assert len(reference_mask) == b
        reference_mask = [bool(m) for m in reference_mask]
        self.calls.append((b, f, list(reference_mask), audio.abs().flatten(1).sum(1).tolist(),
                           pose_features.abs().flatten(1).sum(1).tolist()))
        ref = reference_bank["block"].to(reference_dtype).float().mean(1)  # [1, 4], rounded like the real read
        refs = torch.stack([ref[0] if m else torch.zeros_like(ref[0]) for m in reference_mask])
        a = self.audio(audio.mean(2)).permute(0, 2, 1)[..., None, None]  # [b,4,f,1,1]
        out = self.mix(sample * (1 - timestep.float() / 2000)) + self.pose(pose_features) + a
        return _Out(sample=out + refs[:, :, None, None, None])


def _pipe(variant="normal"):
    torch.manual_seed(0)
    return EchoMimicPipeline(FakeVAE(), FakeReference(), FakeDenoiser(), FakePoseEncoder(), variant=variant)


def _inputs(frames=20, size=32, chunks=None, tokens=5, ch=8):
    g = torch.Generator().manual_seed(1)
    image = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
    audio = torch.randn(chunks or frames + 2, tokens, ch, generator=g)
    poses = torch.rand(1, 3, frames, size, size, generator=g)
    return image, audio, poses


def _reference_loop(pipe, image, audio, poses, size, frames, steps, cfg, seed, ctx=12, ov=3):
    """Straightforward re-statement of the official loop: whole-sequence pose encoding, += / counter."""
    with torch.no_grad():
        ref = pipe.vae.encode(preprocess_reference(image, size, size)).latent_dist.mean * 0.18215
        bank = pipe.reference_unet(ref, torch.tensor(0)).reference_bank
        pose_feat = pipe.pose_encoder(poses[:, :, :frames])
        aud = audio[None]
        sched = make_scheduler()
        sched.set_timesteps(steps)
        lat = initial_latents((1, 4, frames, size // 8, size // 8), seed)
        do_cfg = cfg > 1
        for i, t in enumerate(sched.timesteps):
            acc = torch.zeros((2 if do_cfg else 1, 4, frames, size // 8, size // 8))
            cnt = torch.zeros((1, 1, frames, 1, 1))
            for win in window_schedule(frames, steps, ctx, ov)[i]:
                x = lat[:, :, win].repeat(2 if do_cfg else 1, 1, 1, 1, 1)
                a, p = aud[:, win], pose_feat[:, :, win]
                if do_cfg:
                    a, p = torch.cat([torch.zeros_like(a), a]), torch.cat([torch.zeros_like(p), p])
                v = pipe.denoising_unet(x, t, a, p, bank, [False, True] if do_cfg else [True], torch.float16).sample
                acc[:, :, win] += v
                cnt[:, :, win] += 1
            v = acc / cnt
            if do_cfg:
                u, c = v.chunk(2)
                v = u + cfg * (c - u)
            lat = sched.step(v, t, lat).prev_sample
        return lat


@pytest.mark.parametrize("cfg,frames", [(2.5, 20), (1.0, 20), (2.0, 7)])
def test_matches_plain_restatement(cfg, frames):
    pipe = _pipe()
    image, audio, poses = _inputs(frames)
    res = pipe.generate(image, audio, poses, width=32, height=32, steps=3, guidance_scale=cfg, seed=5,
                        decode=False, window_batch_size=1)
    ref = _reference_loop(pipe, image, audio, poses, 32, frames, 3, cfg, 5)
    assert res.num_frames == frames and res.latents.shape == (1, 4, frames, 4, 4)
    assert (res.latents - ref).abs().max().item() < 1e-5
    windows = len(window_schedule(frames, 1)[0])
    assert res.unet_calls == [2 if cfg > 1 else 1] * (3 * windows)
    calls = pipe.denoising_unet.calls
    if cfg > 1:  # uncond half: zero audio, zero pose, no reference; cond half: all three
        assert all(c[2] == [False, True] and c[3][0] == 0 and c[4][0] == 0 and c[3][1] > 0 and c[4][1] > 0
                   for c in calls)
    else:
        assert all(c[2] == [True] and c[3][0] > 0 and c[4][0] > 0 for c in calls)


def test_acc_preset_defaults_and_no_uncond_pass():
    pipe = _pipe("acc")
    image, audio, poses = _inputs(20)
    res = pipe.generate(image, audio, poses, width=32, height=32, decode=False, window_batch_size=1)
    assert len(res.timesteps) == 6 and res.guidance_scale == 1.0 and res.seed == 420
    assert set(res.unet_calls) == {1} and len(res.unet_calls) == 6 * 3
    # the averaged (not summed) prediction goes to the scheduler: compare one step by hand
    seen = []
    pipe.generate(image, audio, poses, width=32, height=32, steps=1, decode=False,
                  callback_on_step_end=lambda p, i, t, kw: seen.append(kw["noise_pred"]))
    assert seen[0].abs().max() < 10  # a summed prediction would double the overlap frames


def test_streaming_progress_and_chunked_decode():
    pipe = _pipe()
    image, audio, poses = _inputs(10)
    got, progress = [], []
    res = pipe.generate(image, audio, poses, width=32, height=32, steps=2, guidance_scale=2.0, seed=1,
                        decode_chunk_size=4, on_frames=got.append, on_progress=progress.append)
    assert res.frames is None
    assert [f.shape for f in got] == [(4, 3, 32, 32), (4, 3, 32, 32), (2, 3, 32, 32)]
    assert pipe.vae.decoded_batches == [4, 4, 2]
    assert [p.done for p in progress] == list(range(1, 2 * 1 + 3 + 1))
    assert progress[-1].done == progress[-1].total and progress[-1].phase == "decode"
    collected = pipe.generate(image, audio, poses, width=32, height=32, steps=2, guidance_scale=2.0, seed=1)
    assert torch.equal(collected.frames, torch.cat(got))
    assert collected.frames.min() >= 0 and collected.frames.max() <= 1


def test_cancellation_between_windows():
    pipe = _pipe()
    image, audio, poses = _inputs(20)
    counter = {"n": 0}

    def cancel():
        counter["n"] += 1
        return counter["n"] > 4

    got = []
    with pytest.raises(Interrupted):
        pipe.generate(image, audio, poses, width=32, height=32, steps=3, on_frames=got.append, cancel=cancel,
                      window_batch_size=1)
    assert got == [] and len(pipe.denoising_unet.calls) == 3  # checked before the 4th window

    class Stop(Exception):
        pass

    def raising():
        raise Stop()

    with pytest.raises(Stop):
        pipe.generate(image, audio, poses, width=32, height=32, steps=3, cancel=raising)


def test_length_follows_audio_and_poses():
    pipe = _pipe()
    image, audio, poses = _inputs(frames=15, chunks=12)
    assert pipe.generate(image, audio, poses, width=32, height=32, steps=1, decode=False).num_frames == 12
    assert pipe.generate(image, audio, poses, width=32, height=32, steps=1, num_frames=5,
                         decode=False).num_frames == 5
    image, audio, poses = _inputs(frames=8, chunks=30)
    assert pipe.generate(image, audio, poses, width=32, height=32, steps=1, decode=False).num_frames == 8
    with pytest.raises(InputError, match="pose sequence has 8 frames"):
        pipe.generate(image, audio, poses, width=32, height=32, steps=1, num_frames=9)


def test_pose_sources_agree():
    _, _, poses = _inputs(6)
    u8 = (poses[0].permute(1, 2, 3, 0) * 255).to(torch.uint8)
    from_u8 = PoseSource(u8.numpy(), 32, 32).images([4, 0, 1])
    drawn = PoseSource(lambda idx, h, w: u8[idx].numpy(), 32, 32, length=6).images([4, 0, 1])
    assert torch.equal(from_u8, drawn)
    assert from_u8.shape == (1, 3, 3, 32, 32)
    with pytest.raises(InputError):
        PoseSource(torch.rand(1, 3, 6, 16, 16), 32, 32)
    with pytest.raises(InputError):
        PoseSource(torch.rand(2, 6, 32, 32), 32, 32)
    with pytest.raises(InputError):
        PoseSource("poses", 32, 32)


def test_reference_aspect_is_cropped_with_warning():
    pipe = _pipe()
    _, audio, poses = _inputs(4, size=32)
    wide = np.zeros((16, 48, 3), np.uint8)
    with pytest.warns(UserWarning, match="aspect"):
        res = pipe.generate(wide, audio, poses, width=32, height=32, steps=1, decode=False)
    assert any("aspect" in w for w in res.warnings)


@pytest.mark.parametrize("kwargs,match", [
    ({"width": 30}, "multiples of 8"), ({"height": 0}, "multiples of 8"), ({"steps": 0}, "steps"),
    ({"steps": -2}, "steps"), ({"num_frames": 0}, "frames"), ({"guidance_scale": float("nan")}, "guidance"),
    ({"context_frames": 4, "context_overlap": 4}, "overlap"), ({"decode_chunk_size": 0}, "chunk"),
])
def test_bad_settings_fail_before_work(kwargs, match):
    pipe = _pipe()
    image, audio, poses = _inputs(4)
    settings = {"width": 32, "height": 32, "steps": 1, **kwargs}
    with pytest.raises(InputError, match=match):
        pipe.generate(image, audio, poses, **settings)
    assert pipe.denoising_unet.calls == [] and pipe.vae.decoded_batches == []


def test_bad_inputs_fail_before_work(tmp_path):
    pipe = _pipe()
    image, audio, poses = _inputs(4)
    not_image = tmp_path / "x.png"
    not_image.write_text("not an image")
    for args, match in [((not_image, audio, poses), "not a readable image"),
                        ((tmp_path / "missing.png", audio, poses), "not found"),
                        ((image, audio[0], poses), "audio features"),
                        ((image, audio, torch.rand(3, 4, 32, 32, 2)), "pose")]:
        with pytest.raises(InputError, match=match):
            pipe.generate(*args, width=32, height=32, steps=1)
    assert pipe.denoising_unet.calls == []


def test_pose_drawing_cache_is_exact_and_bounded():
    rng = np.random.default_rng(0)
    frames = np.zeros((6, 32, 32, 3), np.uint8)
    frames[:, 5:12, 8:20] = rng.integers(0, 255, (6, 7, 12, 3))  # sparse, like hand drawings
    frames[3] = 0                                                 # an empty frame
    calls = []

    def draw(idx, h, w):
        calls.append(list(idx))
        return frames[idx]

    cached = PoseSource(draw, 32, 32, length=6, cache_bytes=1 << 20)
    first = cached.images([0, 1, 2, 3])
    assert calls == [[0, 1, 2, 3]]
    again = cached.images([2, 3, 4, 0])
    assert calls == [[0, 1, 2, 3], [4]]  # only the new frame is drawn
    assert torch.equal(again, PoseSource(lambda i, h, w: frames[i], 32, 32, length=6).images([2, 3, 4, 0]))
    assert torch.equal(first[:, :, 0], again[:, :, 3])
    assert cached._cache_used < frames[0].nbytes * 2  # stored cropped + compressed
    tiny = PoseSource(draw, 32, 32, length=6, cache_bytes=10)
    tiny.images([0, 1])
    tiny.images([0, 1])
    assert calls[-2:] == [[0, 1], [0, 1]]  # over budget: nothing kept, redrawn
