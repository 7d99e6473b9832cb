"""The sampling engine of :class:`~echomimic_core.pipeline.EchoMimicPipeline`: plan -> denoise -> decode.

* :meth:`SamplingEngine.plan` - cheap: validates settings and inputs, fixes the length, scheduler, timesteps,
  windows per step and how they are batched, the initial noise. Nothing heavy has run when it raises.
* :meth:`SamplingEngine.prepare` - the step-independent work, once: reference latents and ReferenceNet bank,
  audio features on the device, pose features of as many frames as the memory budget allows, and an empty
  per-generation attention cache (reference keys/values, zero-audio constants; filled on first use).
* :meth:`SamplingEngine.denoise_batch` - one denoiser call over a batch of context windows (times two with CFG),
  :meth:`SamplingEngine.denoise_step` - one timestep: every batch, window average, guidance, one scheduler step
  over the whole latent.
* :meth:`SamplingEngine.decode` - VAE decode in chunks, handed out as they come (flat memory).

The speed-ups are exact (same prediction as the one-window-at-a-time path within float rounding; unit tests in
tests/test_engine.py): several windows per call, pose features once per frame, the reference projections once
per layer, no audio cross-attention for the unconditional half (a constant), the frame-local head of the denoiser
once per frame and step however many windows cover the frame (:mod:`.sampling.frame_heads`), host-side masks so
nothing in the loop waits for the device.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import torch

from .errors import InputError, Interrupted, NumericalError
from .generation import Conditioning, GenerationPlan, GenerationResult, Progress
from .heap import HeapTrimmer
from .inputs import fit_reference_image, normalize_audio_features, preprocess_reference
from .pose_source import PoseSource
from .profile import Profiler, maybe_phase
from .models.unet_common import DeepFeatures
from .sampling import WindowAccumulator, apply_guidance, initial_latents, make_scheduler, shifted_windows
from .sampling.deep_cache import DeepFeatureStore
from .sampling.frame_heads import FrameHeadShare, frames_repeat
from .sampling.context import uniform_windows
from .sampling.guidance import mask_conditions
from .sampling.scheduler import step_kwargs
from .settings import GenerationSettings, video_length

#: CPU: latent tokens (batch x frames x h x w) per denoiser call the automatic window batch aims for. Tiny
#: windows (the 64x64 demo: 8x8 latents) are batched into a few large calls; big ones run one at a time.
CPU_TOKENS_PER_CALL = 32768
#: CPU: decoded pixels per VAE call of the automatic decode chunk (4 frames at 256x256, 16 at 128x128 and below,
#: 1 at 768x768). Medium bench VAE at 256x256, one thread, idle: 0.091 / 0.094 / 0.110 s per frame at 1 / 2 / 4
#: frames per call; 8 frames per call at 128x128 pushed bench/memory.py's 600/24-frame peak ratio to 1.24
#: (16: 1.16), so the flat-memory bound keeps this larger than the fastest 256x256 chunk
CPU_DECODE_PIXELS = 2**18
#: CPU: give freed heap memory back after every window batch (the page faults it costs were not measurable next
#: to a denoiser call; every 4th batch let the 600/24-frame peak ratio of bench/memory.py reach 1.203) and
#: every 16 decoded frames (after every decode call it cost 25% of the decode time, heap.py)
TRIM_EVERY_BATCHES = 1
TRIM_EVERY_FRAMES = 16
#: CPU: pose-feature cache budget (MiB) when none is given
CPU_POSE_FEATURE_MB = 64.0


def _timestep_value(t) -> int | float:
    value = float(t)
    return int(value) if value.is_integer() else value


def _check_finite(latents: torch.Tensor, step: int, steps: int) -> None:
    if not bool(torch.isfinite(latents).all()):
        raise NumericalError(f"denoising step {step + 1}/{steps} produced NaN/inf: the model weights hold NaN/inf "
                             "(run `python -m echomimic_core check --models DIR`) or the guidance scale is far too "
                             "large for these weights")


def _check_cancel(cancel: Callable[[], Any] | None) -> None:
    if cancel is not None and cancel():
        raise Interrupted("generation cancelled")


class SamplingEngine:
    """The generation loop, mixed into :class:`EchoMimicPipeline` (which provides the networks, ``device``,
    ``dtype``, ``variant``, ``encode_*``, ``reference_bank``, ``decode_latents``)."""

    # -- automatic sizes ---------------------------------------------------------------------------
    def _free_bytes(self) -> Optional[int]:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free)
        return None

    def auto_window_batch(self, tokens_per_window: int, num_windows: int) -> int:
        """Windows per denoiser call: on CPU up to :data:`CPU_TOKENS_PER_CALL` latent tokens; on CUDA what
        half the free memory holds at a conservative activation estimate per token."""
        free = self._free_bytes()
        if free is None:
            batch = CPU_TOKENS_PER_CALL // max(1, tokens_per_window)
        else:
            c0 = int(getattr(getattr(self.denoising_unet, "config", None), "block_out_channels", [320])[0])
            per_token = 48 * c0 * torch.finfo(self.dtype).bits // 8
            batch = int(0.5 * free) // max(1, per_token * tokens_per_window)
        return max(1, min(num_windows, batch))

    def auto_decode_chunk(self, width: int, height: int) -> int:
        free = self._free_bytes()
        if free is None:
            chunk = CPU_DECODE_PIXELS // (width * height)
        else:
            c0 = int(getattr(getattr(self.vae, "config", None), "block_out_channels", [128])[0])
            per_frame = 8 * c0 * width * height * torch.finfo(self._module_dtype(self.vae)).bits // 8
            chunk = int(0.5 * free) // max(1, per_frame)
        return max(1, min(16, chunk))

    def auto_pose_feature_mb(self) -> float:
        free = self._free_bytes()
        return CPU_POSE_FEATURE_MB if free is None else min(4096.0, 0.1 * free / 2**20)

    # -- plan ----------------------------------------------------------------------------------------
    def plan(self, reference_image: Any, audio_features: Any, poses: Any, settings: GenerationSettings,
             latents: torch.Tensor | None = None) -> GenerationPlan:
        """Validate everything cheap and decide the run (raises :class:`InputError` before heavy work)."""
        s = settings.checked(self.variant)
        factor = self.vae_scale_factor
        if s.width % factor or s.height % factor:
            raise InputError(f"width and height must be multiples of the VAE scale factor {factor} "
                             f"(got {s.width}x{s.height})")
        audio = normalize_audio_features(audio_features)
        pose_source = PoseSource(poses, s.width, s.height, cache_bytes=int(float(s.pose_cache_mb) * 2**20))
        n = video_length(s.num_frames, audio.shape[0], pose_source.length)
        motion_max = _motion_max_frames(self.denoising_unet)
        if motion_max is not None and min(s.context_frames, n) > motion_max:
            raise InputError(f"context frames {s.context_frames} exceed the motion module's position table "
                             f"({motion_max} frames)")
        image, notes = fit_reference_image(reference_image, s.width, s.height)

        scheduler = make_scheduler(self.scheduler_kwargs, s.scheduler)
        scheduler.set_timesteps(s.steps, device="cpu")
        timesteps = list(scheduler.timesteps)
        h8, w8 = s.height // factor, s.width // factor
        channels = getattr(getattr(self.denoising_unet, "config", None), "in_channels", None) \
            or getattr(self.denoising_unet, "in_channels", 4)
        shape = (1, int(channels), n, h8, w8)
        generator = torch.Generator("cpu").manual_seed(s.seed)
        if latents is None:
            latents = initial_latents(shape, generator, dtype=self.dtype, device="cpu",
                                      init_noise_sigma=float(scheduler.init_noise_sigma))
        elif tuple(latents.shape) != shape:
            raise InputError(f"initial latents must have shape {shape} (got {tuple(latents.shape)})")
        latents = latents.detach().float().to(self.device)  # small; stepped in float32 for the whole video

        base = uniform_windows(n, s.context_frames, s.context_overlap)
        schedule = [shifted_windows(base, i, n) for i in range(len(timesteps))]
        guided = s.guided_steps()
        if s.deep_cache_interval > 1 and not self.denoising_unet.supports_deep_features():
            raise InputError("deep cache: this denoiser's outermost level cannot run alone; use interval 1")
        size = len(base[0])
        per_window = (2 if any(guided) else 1) * size * h8 * w8
        batch = s.window_batch_size or self.auto_window_batch(per_window, len(base))
        batches = [[windows[k:k + batch] for k in range(0, len(windows), batch)] for windows in schedule]
        chunk = s.decode_chunk_size or self.auto_decode_chunk(s.width, s.height)
        budget = self.auto_pose_feature_mb() if s.pose_feature_cache_mb is None else float(s.pose_feature_cache_mb)
        c0 = _pose_channels(self.pose_encoder)
        per_frame = (c0 or 1) * h8 * w8 * torch.finfo(self._module_dtype(self.pose_encoder)).bits // 8
        pose_frames = min(n, int(budget * 2**20) // per_frame) if c0 else 0
        return GenerationPlan(
            settings=s.replace(decode_chunk_size=chunk, window_batch_size=batch, pose_feature_cache_mb=budget),
            num_frames=n, shape=shape, scheduler=scheduler, timesteps=timesteps, schedule=schedule,
            batches=batches, guided=guided, image=image, audio=audio, poses=pose_source, latents=latents,
            decode_chunk=chunk, pose_feature_frames=pose_frames, notes=notes,
            step_kwargs=step_kwargs(s.scheduler, generator))

    # -- prepare -------------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, plan: GenerationPlan, profiler: Profiler | None = None) -> Conditioning:
        s = plan.settings
        with maybe_phase(profiler, "reference"):
            ref_latents = self.encode_reference_pixels(preprocess_reference(plan.image, s.width, s.height))
            bank = self.reference_bank(ref_latents)
            del ref_latents
        audio = plan.audio[:plan.num_frames].to(self.device, self.dtype)  # small: [F, tokens, C]
        features = None
        if plan.pose_feature_frames > 0:
            with maybe_phase(profiler, "poses"):
                n = plan.pose_feature_frames
                chunk = max(1, plan.settings.context_frames)
                features = torch.cat([self.encode_poses(plan.poses.images(range(k, min(n, k + chunk))))
                                      .to(self.device, self.dtype) for k in range(0, n, chunk)], dim=2)
        return Conditioning(bank=bank, audio=audio, pose_features=features,
                            cache={} if s.cache_reference_kv else None,
                            deep=DeepFeatureStore() if s.deep_cache_interval > 1 else None)

    # -- denoise -------------------------------------------------------------------------------------
    def _pose_features(self, plan: GenerationPlan, cond: Conditioning, windows: list[list[int]],
                       profiler: Profiler | None) -> torch.Tensor:
        """Pose features ``[B, C0, f, h, w]`` of a window batch: cached frames gathered, the others drawn and
        encoded (once per frame of the batch; the PoseEncoder works frame by frame, so this is exact)."""
        frames = [k for w in windows for k in w]
        B, f = len(windows), len(windows[0])
        n = plan.pose_feature_frames if cond.pose_features is not None else 0
        if n and max(frames) < n:
            idx = torch.tensor(frames, dtype=torch.long).to(self.device)
            flat = cond.pose_features.index_select(2, idx)
        else:
            with maybe_phase(profiler, "poses"):
                fresh_ids = sorted({k for k in frames if k >= n})
                fresh = self.encode_poses(plan.poses.images(fresh_ids)).to(self.device, self.dtype)
                if not n:
                    pos = {k: i for i, k in enumerate(fresh_ids)}
                    flat = fresh.index_select(2, torch.tensor([pos[k] for k in frames]).to(self.device))
                else:
                    flat = fresh.new_empty(fresh.shape[:2] + (len(frames),) + fresh.shape[3:])
                    pos = {k: i for i, k in enumerate(fresh_ids)}
                    old = [j for j, k in enumerate(frames) if k < n]
                    new = [j for j, k in enumerate(frames) if k >= n]
                    if old:
                        src = torch.tensor([frames[j] for j in old]).to(self.device)
                        flat[:, :, torch.tensor(old).to(self.device)] = cond.pose_features.index_select(2, src)
                    flat[:, :, torch.tensor(new).to(self.device)] = fresh.index_select(
                        2, torch.tensor([pos[frames[j]] for j in new]).to(self.device))
        return flat.unflatten(2, (B, f))[0].transpose(0, 1)  # [1, C0, B*f, h, w] -> [B, C0, f, h, w]

    @torch.no_grad()
    def denoise_batch(self, plan: GenerationPlan, cond: Conditioning, timestep, model_input: torch.Tensor,
                      windows: list[list[int]], profiler: Profiler | None = None, guided: bool | None = None,
                      deep: DeepFeatures | None = None, heads: FrameHeadShare | None = None) -> torch.Tensor:
        """One denoiser call over B windows of ``model_input`` ``[1, C, F, h, w]`` -> v-prediction
        ``[branches * B, C, f, h, w]``, ordered ``[uncond w1..wB, cond w1..wB]`` with CFG (``guided``, default
        ``plan.do_cfg``); ``deep``: DeepCache hand-off of this call; ``heads``: the step's shared frame heads."""
        guided = plan.do_cfg if guided is None else guided
        # with shared heads the pose features are already inside them (only conv_in reads them)
        x, kwargs = self._call_inputs(plan, cond, model_input, windows, guided, profiler, poses=heads is None)
        if deep is not None:
            kwargs["deep_features"] = deep
        if heads is not None:
            def compute(frames: list[int]):
                sample, conditioning = self._call_inputs(plan, cond, model_input, [frames], guided, profiler)
                return self.denoising_unet.frame_head(sample, timestep, **conditioning)

            kwargs["frame_head"] = heads.heads(windows, 2 if guided else 1, compute)
        return self._denoiser_call(x, timestep, kwargs)

    def _call_inputs(self, plan: GenerationPlan, cond: Conditioning, model_input: torch.Tensor,
                     windows: list[list[int]], guided: bool, profiler: Profiler | None,
                     poses: bool = True) -> tuple[torch.Tensor, dict]:
        """``(sample [branches * B, C, f, h, w], keywords)`` of a denoiser call over ``windows``: audio, pose
        features (None unless ``poses``), reference bank and mask, the null-audio rows and the attention cache."""
        B, f = len(windows), len(windows[0])
        idx = torch.tensor([k for w in windows for k in w], dtype=torch.long).to(self.device)
        x = model_input.index_select(2, idx).unflatten(2, (B, f))[0].transpose(0, 1).to(self.dtype)
        a = cond.audio.index_select(0, idx).unflatten(0, (B, f))          # [B, f, tokens, C]
        p = self._pose_features(plan, cond, windows, profiler) if poses else None
        kwargs = {}
        if guided:
            keep = [False] * B + [True] * B
            x = torch.cat([x, x])
            a, p, mask = mask_conditions(torch.cat([a, a]), None if p is None else torch.cat([p, p]), keep)
            if plan.settings.skip_uncond_audio:
                kwargs["audio_null_rows"] = [not k for k in keep]
        else:
            mask = (True,) * B
        if cond.cache is not None:
            kwargs["attention_cache"] = cond.cache
        kwargs.update(audio=a, pose_features=p, reference_bank=cond.bank, reference_mask=mask,
                      reference_dtype=self.bank_dtype)
        return x, kwargs

    def _denoiser_call(self, sample: torch.Tensor, timestep, kwargs: dict) -> torch.Tensor:
        net = self._compiled_denoiser() if self._compile else None
        if net is not None:
            try:
                return net(sample, timestep, **kwargs).sample
            except Exception as exc:  # noqa: BLE001 - any compile failure: fall back to eager, once
                warnings.warn(f"torch.compile of the denoiser failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); running it eagerly",
                              stacklevel=2)
                self._compile = False
        return self.denoising_unet(sample, timestep, **kwargs).sample

    def _compiled_denoiser(self):
        if getattr(self, "_compiled", None) is None:
            try:
                self._compiled = torch.compile(self.denoising_unet)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"torch.compile is unavailable ({type(exc).__name__}: {exc}); running eagerly",
                              stacklevel=3)
                self._compile = False
                return None
        return self._compiled

    @torch.no_grad()
    def denoise_step(self, plan: GenerationPlan, cond: Conditioning, i: int, latents: torch.Tensor, *,
                     result: GenerationResult | None = None, cancel=None, on_batch=None,
                     profiler: Profiler | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Timestep ``i``: every window batch, per-frame average, guidance, one ``scheduler.step`` over the
        whole latent (multistep schedulers keep state across calls). Returns ``(noise_pred, latents)``."""
        t = plan.timesteps[i]
        scheduler = plan.scheduler
        model_input = scheduler.scale_model_input(latents, t)
        t_dev = t.to(self.device)
        guided = plan.guided[i]
        branches = 2 if guided else 1
        store = cond.deep
        full = store is None or i % plan.settings.deep_cache_interval == 0 or not store.ready(branches)
        if store is not None and full:
            store.begin(plan.num_frames)
        acc = WindowAccumulator(branches, plan.shape, device=self.device, dtype=torch.float32,
                                windows=plan.schedule[i])
        trim = HeapTrimmer(TRIM_EVERY_BATCHES, enabled=self.device.type == "cpu")
        share = plan.settings.share_frame_heads and hasattr(self.denoising_unet, "frame_head")
        heads = FrameHeadShare(plan.batches[i]) if share and frames_repeat(plan.schedule[i]) else None
        for windows in plan.batches[i]:
            _check_cancel(cancel)
            deep = None if store is None else DeepFeatures(reuse=None if full else store.gather(windows, branches))
            pred = self.denoise_batch(plan, cond, t_dev, model_input, windows, profiler, guided, deep, heads)
            if deep is not None and full:
                store.add(windows, deep.features, branches)
            del deep
            if result is not None:
                result.unet_calls.append(int(pred.shape[0]))
            acc.add_batch(windows, pred.float())
            del pred
            trim.tick()
            if on_batch is not None:
                on_batch(len(windows))
        del model_input
        if store is not None and full:
            store.finish(self.dtype)
        noise_pred = apply_guidance(acc.mean_(), plan.settings.guidance_scale if guided else 1.0, inplace=True)
        latents = scheduler.step(noise_pred, t, latents, **plan.step_kwargs).prev_sample
        return noise_pred, latents

    # -- decode --------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, plan: GenerationPlan, latents: torch.Tensor, on_frames=None, cancel=None, on_chunk=None,
               profiler: Profiler | None = None) -> Optional[torch.Tensor]:
        """Decode ``plan.decode_chunk`` frames at a time; frames go to ``on_frames`` as they come (returns
        None) or are collected (returns ``[F, 3, H, W]``)."""
        collected: list[torch.Tensor] | None = [] if on_frames is None else None
        decoded = 0
        trim = HeapTrimmer(TRIM_EVERY_FRAMES, enabled=self.device.type == "cpu")
        for _, frames in self.decode_latents(latents, plan.decode_chunk):
            _check_cancel(cancel)
            with maybe_phase(profiler, "write"):
                if on_frames is not None:
                    on_frames(frames)
                else:
                    collected.append(frames)
            decoded += frames.shape[0]
            trim.tick(int(frames.shape[0]))
            del frames
            if on_chunk is not None:
                on_chunk(decoded)
        return torch.cat(collected) if collected is not None else None

    # -- the whole run ---------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, plan: GenerationPlan, *, decode: bool = True, on_frames=None, on_progress=None, cancel=None,
            callback_on_step_end=None, profiler: Profiler | None = None) -> GenerationResult:
        s = plan.settings
        for note in plan.notes:
            warnings.warn(note, stacklevel=3)
        _check_cancel(cancel)
        self._compile = s.compile
        steps = len(plan.timesteps)
        total = plan.total_units if decode else sum(len(w) for w in plan.schedule)
        result = GenerationResult(latents=plan.latents, frames=None, num_frames=plan.num_frames,
                                  timesteps=[_timestep_value(t) for t in plan.timesteps],
                                  windows_per_step=plan.schedule, guidance_scale=s.guidance_scale, seed=s.seed,
                                  width=s.width, height=s.height, warnings=list(plan.notes), settings=s)
        done = 0
        cond = self.prepare(plan, profiler)
        latents = plan.latents
        try:
            with maybe_phase(profiler, "denoise"):
                for i in range(steps):
                    state = {"window": 0}

                    def on_batch(count, i=i, state=state):
                        nonlocal done
                        done += count
                        state["window"] += count
                        if on_progress is not None:
                            on_progress(Progress("denoise", i, steps, state["window"], len(plan.schedule[i]),
                                                 done, total, result.timesteps[i]))

                    noise_pred, latents = self.denoise_step(plan, cond, i, latents, result=result, cancel=cancel,
                                                            on_batch=on_batch, profiler=profiler)
                    if callback_on_step_end is not None:
                        out = callback_on_step_end(self, i, result.timesteps[i],
                                                   {"latents": latents, "noise_pred": noise_pred})
                        if out and out.get("latents") is not None:
                            latents = out["latents"].detach().float().to(self.device)
                    del noise_pred
                    _check_finite(latents, i, steps)  # one sync per step: stop at once instead of a black video
        finally:
            del cond
        result.latents = latents.cpu()
        if not decode:
            return result

        def on_chunk(decoded):
            nonlocal done
            done += 1
            if on_progress is not None:
                on_progress(Progress("decode", steps, steps, decoded, plan.num_frames, done, total))

        with maybe_phase(profiler, "decode"):
            result.frames = self.decode(plan, latents, on_frames=on_frames, cancel=cancel, on_chunk=on_chunk,
                                        profiler=profiler)
        if profiler is not None:
            profiler.frames = plan.num_frames
        return result


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _pose_channels(pose_encoder) -> Optional[int]:
    config = getattr(pose_encoder, "config", None)
    c0 = getattr(config, "conditioning_embedding_channels", None) if config is not None else None
    if c0 is None:
        out = getattr(pose_encoder, "conv_out", None) or getattr(pose_encoder, "conv", None)
        c0 = getattr(out, "out_channels", None)
    return int(c0) if c0 else None


def _motion_max_frames(unet) -> int | None:
    """Longest window the motion modules' position table allows (None without motion modules)."""
    kwargs = getattr(unet, "unet_additional_kwargs", None) or {}
    motion = kwargs.get("motion_module_kwargs") or {}
    if not kwargs.get("use_motion_module", False) or not motion.get("temporal_position_encoding", False):
        return None
    return int(motion["temporal_position_encoding_max_len"])


__all__ = ["Conditioning", "GenerationPlan", "GenerationResult", "Progress", "SamplingEngine"]
