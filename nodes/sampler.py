"""Sampler nodes: reference IMAGE + audio features + poses -> frames (IMAGE batch), or streamed
straight into an mp4 (+AAC) in the output folder for long videos; and two small option nodes
(context windows, sampler preset) so the sampler's own widgets stay few.

``run_pipeline`` is the one place that calls into the library (``EchoMimicPipeline.generate``): the
frames arrive chunk by chunk (``on_frames``), its progress drives a ComfyUI ProgressBar on the node
(one unit per window per step, then per decoded chunk, with a preview frame now and then) and
ComfyUI's interrupt flag is checked through its ``cancel`` callable.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import torch
from comfy_api.latest import io, ui
from echomimic_core.errors import InputError
from echomimic_core.settings import FAST_OPTIONS, FAST_SAMPLER

from . import _comfy
from ._edge import node_edge

PRESET_NAMES = ["normal", "acc", "fast"]
# "fast" is the library's measured fast options on the normal weights (README "Speed": DPM++ 2M at 10 steps,
# windows without overlap, deep-feature reuse every other step; held-out demo quality within 10% of the exact
# 20-step DDIM run at 3.3x less time); normal/acc come from the library's presets.
_FAST = {"cfg": 2.5, "variant": "normal", **FAST_SAMPLER, **FAST_OPTIONS}


@dataclass(frozen=True)
class ContextOptions:
    """What travels on an ECHOMIMIC_CONTEXT socket."""

    context_frames: int = 12
    context_overlap: int = 3
    decode_batch: int = 1
    window_batch: int = 0          # context windows per denoiser call; 0 = automatic (from free memory)


@dataclass(frozen=True)
class SamplerPreset:
    """What travels on an ECHOMIMIC_SAMPLER_PRESET socket."""

    name: str
    steps: int
    cfg: float
    variant: str
    scheduler: str = "ddim"
    context_schedule: str = "uniform"
    deep_cache_interval: int = 1


def preset_values(name: str) -> SamplerPreset:
    if name == "fast":
        return SamplerPreset("fast", _FAST["steps"], _FAST["cfg"], _FAST["variant"], _FAST["scheduler"],
                             _FAST["context_schedule"], _FAST["deep_cache_interval"])
    from echomimic_core.sampling import get_preset

    p = get_preset(name)
    return SamplerPreset(name, int(p.steps), float(p.guidance_scale), p.variant)


# ------------------------------------------------------------------ the sampler's inputs
def sampler_inputs() -> list:
    """Inputs shared by both sampler nodes (widgets in the order saved workflows store them)."""
    return [
        _comfy.Models.Input("models", tooltip="From EchoMimicV2 Model Loader."),
        io.Image.Input("reference", tooltip="The person to animate: a half-body crop, hands visible (first image "
                                            "of the batch is used; centre-cropped to the output aspect)."),
        _comfy.AudioFeatures.Input("audio_features", tooltip="From EchoMimicV2 Audio Encoder."),
        _comfy.Poses.Input("poses", tooltip="Hand poses, as long as the video (EchoMimicV2 Fit Pose Length)."),
        io.Int.Input("seed", default=3407, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Initial noise seed (official: 3407 normal, 420 acc)."),
        io.Int.Input("steps", default=30, min=1, max=200,
                     tooltip="DDIM steps (official: 30 normal, 6 acc). Ignored when a preset is connected."),
        io.Float.Input("cfg", default=2.5, min=0.0, max=20.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance on audio+pose+reference (official: 2.5 normal, 1.0 acc; "
                               "<= 1 runs a single branch). Ignored when a preset is connected."),
        _comfy.advanced(io.Int.Input("context_frames", default=12, min=1, max=32, tooltip=(
            "Frames per denoising window (official 12). Ignored when context options are connected."))),
        _comfy.advanced(io.Int.Input("context_overlap", default=3, min=0, max=31, tooltip=(
            "Frames shared by neighbouring windows (official 3). Ignored when context options are connected."))),
        io.Int.Input("width", default=768, min=64, max=4096, step=8, tooltip="Output width (multiple of 8)."),
        io.Int.Input("height", default=768, min=64, max=4096, step=8, tooltip="Output height (multiple of 8)."),
        io.Int.Input("length", default=0, min=0, max=100000,
                     tooltip="Frames to generate; 0 = as long as the audio (and the poses)."),
    ]


def option_inputs() -> list:
    """Optional sockets after every widget, so saved workflows keep their widget order."""
    return [
        _comfy.Context.Input("context", optional=True,
                             tooltip="From EchoMimicV2 Context Options (overrides context_frames/overlap)."),
        _comfy.SamplerPreset.Input("preset", optional=True,
                                   tooltip="From EchoMimicV2 Sampler Preset (overrides steps and cfg)."),
    ]


def check_context(context_frames, context_overlap) -> str | None:
    """The cheap window check (also the range check: ComfyUI skips min/max for inputs that
    validate_inputs takes). None when fine; a linked value arrives as None and is checked at run time."""
    if context_frames is not None and int(context_frames) < 1:
        return f"context_frames must be at least 1 (got {context_frames})"
    if context_overlap is not None and int(context_overlap) < 0:
        return f"context_overlap must be 0 or more (got {context_overlap})"
    if context_frames is not None and context_overlap is not None and context_overlap >= context_frames:
        return f"context_overlap ({context_overlap}) must be smaller than context_frames ({context_frames})"
    return None


def _features_tensor(audio_features):
    return audio_features.chunks if hasattr(audio_features, "chunks") else audio_features


def _fps_of(audio_features) -> float:
    return float(getattr(audio_features, "fps", 24.0))


def settings(seed, steps, cfg, context_frames, context_overlap, width, height, length,
             context: ContextOptions | None = None, preset: SamplerPreset | None = None) -> dict:
    """The run settings: widgets, overridden by connected option nodes."""
    ctx = context or ContextOptions(int(context_frames), int(context_overlap))
    out = {"seed": int(seed), "steps": int(steps), "cfg": float(cfg), "width": int(width), "height": int(height),
           "length": int(length), "context_frames": ctx.context_frames, "context_overlap": ctx.context_overlap,
           "decode_batch": ctx.decode_batch, "window_batch": ctx.window_batch or None,
           "preset": preset.name if preset else None, "scheduler": "ddim", "context_schedule": "uniform",
           "deep_cache_interval": 1}
    if preset is not None:
        out.update(steps=preset.steps, cfg=preset.cfg, scheduler=preset.scheduler,
                   context_schedule=preset.context_schedule, deep_cache_interval=preset.deep_cache_interval)
    return out


# ------------------------------------------------------------------ the one call into the library
def _pipeline(handle):
    """The pipeline over the loaded models, built once per loaded model set."""
    pipe = getattr(handle, "pipeline", None)
    if pipe is None:
        from echomimic_core.pipeline import EchoMimicPipeline

        pipe = EchoMimicPipeline.from_models(handle.models)
        handle.pipeline = pipe
    return pipe


def run_pipeline(handle, reference, audio_features, poses, run: dict, on_frames, bar: _comfy.Progress):
    """Run the library sampler on ComfyUI's compute device with its progress bar and interrupt.
    Library warnings (e.g. the reference resize) are logged under the pack's name."""
    from echomimic_core.settings import GenerationSettings

    ref = _comfy.image_to_uint8(reference, 0)
    handle.to_compute()

    def frames_out(chunk):
        bar.preview(chunk[-1])
        on_frames(chunk)

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            settings = GenerationSettings(
                width=run["width"], height=run["height"], num_frames=run["length"] or None, steps=run["steps"],
                guidance_scale=run["cfg"], seed=run["seed"], context_frames=run["context_frames"],
                context_overlap=run["context_overlap"], decode_chunk_size=run["decode_batch"],
                window_batch_size=run.get("window_batch"), scheduler=run.get("scheduler", "ddim"),
                context_schedule=run.get("context_schedule", "uniform"),
                deep_cache_interval=run.get("deep_cache_interval", 1))
            result = _pipeline(handle).generate(
                ref, _features_tensor(audio_features), poses, settings,
                on_frames=frames_out, on_progress=lambda p: bar(p.done, p.total),
                cancel=_comfy.throw_if_interrupted)
    finally:
        handle.after_run()
    for w in caught:
        logging.warning("EchoMimicV2 Sampler: %s", w.message)
    return result


def generate(cls, models, reference, audio_features, poses, run: dict, on_frames):
    if reference is None or reference.ndim not in (3, 4) or reference.shape[-1] < 3:
        raise InputError("EchoMimicV2 Sampler: reference must be an IMAGE (e.g. from Load Image)")
    problem = check_context(run["context_frames"], run["context_overlap"])
    if problem:
        raise InputError(f"EchoMimicV2 Sampler: {problem}")
    if run["preset"] and models.variant != preset_values(run["preset"]).variant:
        logging.warning("EchoMimicV2 Sampler: preset %r is meant for the %r weights, the loader has %r",
                        run["preset"], preset_values(run["preset"]).variant, models.variant)
    bar = _comfy.Progress(1, _comfy.node_id_of(cls))
    return run_pipeline(models, reference, audio_features, poses, run, on_frames, bar)


class FrameCollector:
    """Receives float [n, 3, H, W] chunks and writes them into one preallocated IMAGE batch
    [F, H, W, 3] (float32, intermediate device), so the frames exist once, not twice."""

    def __init__(self, expected: int):
        self.expected = max(int(expected), 1)
        self.out: torch.Tensor | None = None
        self.count = 0

    def __call__(self, frames: torch.Tensor) -> None:
        chunk = frames.detach().permute(0, 2, 3, 1)  # [n, 3, H, W] -> [n, H, W, 3]
        n = int(chunk.shape[0])
        if self.out is None:
            self.out = torch.empty((max(self.expected, n),) + tuple(chunk.shape[1:]), dtype=torch.float32,
                                   device=_comfy.intermediate_device())
        if self.count + n > self.out.shape[0]:  # more than announced: grow (not expected to happen)
            grow = torch.empty((self.count + n - self.out.shape[0],) + tuple(self.out.shape[1:]),
                               dtype=self.out.dtype, device=self.out.device)
            self.out = torch.cat([self.out, grow])
        self.out[self.count:self.count + n].copy_(chunk)
        self.count += n

    def images(self) -> torch.Tensor:
        if self.out is None or self.count == 0:
            raise RuntimeError("EchoMimicV2 Sampler: the pipeline produced no frames")
        return self.out[:self.count].clamp_(0, 1)


def expected_frames(audio_features, poses, length: int) -> int:
    chunks = int(_features_tensor(audio_features).shape[0])
    if length:
        return min(int(length), chunks)
    try:
        return min(chunks, len(poses))
    except TypeError:
        return chunks


# ------------------------------------------------------------------ nodes
class EchoMimicV2Sampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2Sampler", "EchoMimicV2 Sampler",
            "Generates the video frames (an IMAGE batch) from a reference image, audio features and hand poses. "
            "For long videos use EchoMimicV2 Sample To File, which never holds all frames.",
            inputs=sampler_inputs() + option_inputs(),
            outputs=[io.Image.Output("images", display_name="images", tooltip="The frames, for Video Combine."),
                     io.Float.Output("fps", display_name="fps", tooltip="Frame rate of the audio features."),
                     io.Int.Output("frame_count", display_name="frame_count", tooltip="Frames generated.")],
        )

    @classmethod
    def validate_inputs(cls, context_frames, context_overlap):
        problem = check_context(context_frames, context_overlap)
        return True if problem is None else problem

    @classmethod
    @node_edge
    def execute(cls, models, reference, audio_features, poses, seed, steps, cfg, context_frames,
                context_overlap, width, height, length, context=None, preset=None) -> io.NodeOutput:
        run = settings(seed, steps, cfg, context_frames, context_overlap, width, height, length, context, preset)
        collector = FrameCollector(expected_frames(audio_features, poses, run["length"]))
        result = generate(cls, models, reference, audio_features, poses, run, collector)
        return io.NodeOutput(collector.images(), _fps_of(audio_features), int(result.num_frames))


class EchoMimicV2SampleToFile(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2SampleToFile", "EchoMimicV2 Sample To File (long videos)",
            "Generates the video and streams every decoded frame straight into an mp4 (H.264 + AAC) in the output "
            "folder; the file appears only when complete (atomic). Memory stays flat in the video length.",
            inputs=sampler_inputs() + [
                io.String.Input("filename_prefix", default="echomimic_v2/EchoMimicV2",
                                tooltip="Output file prefix (sub-folders allowed), as in Save Video."),
                _comfy.advanced(io.Int.Input("crf", default=19, min=0, max=51,
                                             tooltip="H.264 quality (lower = better, bigger).")),
                io.Audio.Input("audio", optional=True, tooltip="Speech to mux as AAC (cut to the video's length)."),
            ] + option_inputs(),
            outputs=[io.Video.Output("video", display_name="video", tooltip="The written mp4."),
                     io.String.Output("filename", display_name="filename", tooltip="Its full path.")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, context_frames, context_overlap):
        problem = check_context(context_frames, context_overlap)
        return True if problem is None else problem

    @classmethod
    @node_edge
    def execute(cls, models, reference, audio_features, poses, seed, steps, cfg, context_frames,
                context_overlap, width, height, length, filename_prefix, crf, audio=None, context=None,
                preset=None) -> io.NodeOutput:
        from comfy_api.latest import InputImpl
        from echomimic_core.video import VideoWriter

        run = settings(seed, steps, cfg, context_frames, context_overlap, width, height, length, context, preset)
        fps = _fps_of(audio_features)
        folder, stem, counter, subfolder = _comfy.save_path(filename_prefix, run["width"], run["height"])
        filename = f"{stem}_{counter:05}_.mp4"
        path = os.path.join(folder, filename)
        mux = None
        if audio is not None:
            mux = (audio["waveform"][0], int(audio["sample_rate"]))
        # frames go straight into the encoder; the file is renamed into place only when complete and
        # deleted on any error or Cancel (VideoWriter is atomic)
        with VideoWriter(path, fps=fps, audio=mux, crf=int(crf)) as writer:
            generate(cls, models, reference, audio_features, poses, run, writer.write)
        saved = ui.SavedResult(filename, subfolder, io.FolderType.output)
        return io.NodeOutput(InputImpl.VideoFromFile(path), path, ui=ui.PreviewVideo([saved]))


class EchoMimicV2ContextOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2ContextOptions", "EchoMimicV2 Context Options",
            "Context windows of the sampler (like core's context-window node): frames per window, overlap, "
            "and how many frames the VAE decodes at once. Connect to the sampler's 'context' input.",
            inputs=[
                io.Int.Input("context_frames", default=12, min=1, max=32,
                             tooltip="Frames per denoising window (official 12; the motion module's limit)."),
                io.Int.Input("context_overlap", default=3, min=0, max=31,
                             tooltip="Frames shared by neighbouring windows (official 3)."),
                io.Int.Input("decode_batch", default=1, min=1, max=64,
                             tooltip="Frames the VAE decodes per call (more = faster, more memory)."),
                io.Int.Input("window_batch", default=0, min=0, max=256, optional=True,
                             tooltip="Context windows per denoiser call (same output, faster); 0 = automatic."),
            ],
            outputs=[_comfy.Context.Output("context", display_name="context",
                                           tooltip="For the sampler's 'context' input.")],
        )

    @classmethod
    def validate_inputs(cls, context_frames, context_overlap):
        problem = check_context(context_frames, context_overlap)
        return True if problem is None else problem

    @classmethod
    @node_edge
    def execute(cls, context_frames, context_overlap, decode_batch, window_batch=0) -> io.NodeOutput:
        return io.NodeOutput(ContextOptions(int(context_frames), int(context_overlap), int(decode_batch),
                                            int(window_batch)))


class EchoMimicV2SamplerPreset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2SamplerPreset", "EchoMimicV2 Sampler Preset",
            "Steps and guidance of a known setting: normal (30 steps, cfg 2.5, normal weights), acc (6 steps, "
            "cfg 1, the acc weights), fast (normal weights, DPM++ 2M 10 steps, cfg 2.5, windows without overlap, "
            "deep-feature reuse every other step: ~3x faster, slightly different output). Connect to the "
            "sampler's 'preset' input.",
            inputs=[io.Combo.Input("preset", options=PRESET_NAMES, default="normal",
                                   tooltip="Pick the one that matches the loader's variant.")],
            outputs=[_comfy.SamplerPreset.Output("sampler_preset", display_name="preset",
                                                 tooltip="For the sampler's 'preset' input.")],
        )

    @classmethod
    def validate_inputs(cls, preset):
        return True if preset in PRESET_NAMES else f"preset must be one of {PRESET_NAMES}, got {preset!r}"

    @classmethod
    @node_edge
    def execute(cls, preset) -> io.NodeOutput:
        return io.NodeOutput(preset_values(preset))


NODES = [EchoMimicV2Sampler, EchoMimicV2SampleToFile, EchoMimicV2ContextOptions, EchoMimicV2SamplerPreset]
NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _comfy.legacy_mappings(NODES)
