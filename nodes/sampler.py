"""Sampler nodes: reference IMAGE + audio features + poses -> frames (IMAGE batch), or streamed
straight into an mp4 (+AAC) in the output folder for long videos.

Both run ``echomimic_core.pipeline.EchoMimicPipeline.generate``: its frames arrive chunk by chunk
(``on_frames``), its progress drives a ComfyUI ProgressBar (one unit per window per step, then per
decoded chunk) and ComfyUI's interrupt flag is checked through its ``cancel`` callable.
"""

from __future__ import annotations

import os

import torch

from . import _comfy


def sampler_inputs() -> dict:
    """Inputs shared by both sampler nodes (the widgets are in the order the UI shows them)."""
    return {
        "models": (_comfy.MODELS, {"tooltip": "From EchoMimicV2 Model Loader."}),
        "reference": ("IMAGE", {"tooltip": "The person to animate: a half-body crop, hands visible (first image "
                                           "of the batch is used; centre-cropped to the output aspect)."}),
        "audio_features": (_comfy.AUDIO_FEATURES, {"tooltip": "From EchoMimicV2 Audio Encoder."}),
        "poses": (_comfy.POSES, {"tooltip": "Hand poses, as long as the video (EchoMimicV2 Fit Pose Length)."}),
        "seed": ("INT", {"default": 3407, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                         "tooltip": "Initial noise seed (official: 3407 normal, 420 acc)."}),
        "steps": ("INT", {"default": 30, "min": 1, "max": 200,
                          "tooltip": "DDIM steps (official: 30 normal, 6 acc)."}),
        "cfg": ("FLOAT", {"default": 2.5, "min": 0.0, "max": 20.0, "step": 0.1, "round": 0.01,
                          "tooltip": "Classifier-free guidance on audio+pose+reference (official: 2.5 normal, "
                                     "1.0 acc; <= 1 runs a single branch)."}),
        "context_frames": ("INT", {"default": 12, "min": 1, "max": 32,
                                   "tooltip": "Frames per denoising window (official 12)."}),
        "context_overlap": ("INT", {"default": 3, "min": 0, "max": 31,
                                    "tooltip": "Frames shared by neighbouring windows (official 3)."}),
        "width": ("INT", {"default": 768, "min": 64, "max": 4096, "step": 8}),
        "height": ("INT", {"default": 768, "min": 64, "max": 4096, "step": 8}),
        "length": ("INT", {"default": 0, "min": 0, "max": 100000,
                           "tooltip": "Frames to generate; 0 = as long as the audio (and the poses)."}),
    }


def _features_tensor(audio_features):
    return audio_features.chunks if hasattr(audio_features, "chunks") else audio_features


def _fps_of(audio_features) -> float:
    return float(getattr(audio_features, "fps", 24.0))


def _pipeline(handle):
    """The pipeline over the loaded models, built once per loaded model set."""
    pipe = getattr(handle, "pipeline", None)
    if pipe is None:
        from echomimic_core.pipeline import EchoMimicPipeline

        pipe = EchoMimicPipeline.from_models(handle.models)
        handle.pipeline = pipe
    return pipe


def generate(models, reference, audio_features, poses, seed, steps, cfg, context_frames,
             context_overlap, width, height, length, on_frames):
    """Run the library sampler with ComfyUI's progress bar and interrupt; returns the GenerationResult."""
    if reference is None or reference.ndim not in (3, 4) or reference.shape[-1] < 3:
        raise ValueError("EchoMimicV2 Sampler: reference must be an IMAGE (e.g. from Load Image)")
    if context_overlap >= context_frames:
        raise ValueError(f"EchoMimicV2 Sampler: context_overlap ({context_overlap}) must be smaller than "
                         f"context_frames ({context_frames})")
    ref = _comfy.image_to_uint8(reference, 0)
    bar = _comfy.Progress(1)
    models.to_compute()
    try:
        return _pipeline(models).generate(
            ref, _features_tensor(audio_features), poses,
            width=int(width), height=int(height), num_frames=int(length) or None,
            steps=int(steps), guidance_scale=float(cfg), seed=int(seed),
            context_frames=int(context_frames), context_overlap=int(context_overlap),
            on_frames=on_frames, on_progress=lambda p: bar(p.done, p.total),
            cancel=_comfy.throw_if_interrupted)
    finally:
        models.after_run()


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


class EchoMimicV2Sampler:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": sampler_inputs()}

    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("images", "fps", "frame_count")
    FUNCTION = "sample"
    CATEGORY = _comfy.CATEGORY
    DESCRIPTION = ("Generates the video frames (an IMAGE batch) from a reference image, audio features and hand "
                   "poses. For long videos use EchoMimicV2 Sample To File, which never holds all frames.")

    def sample(self, models, reference, audio_features, poses, seed, steps, cfg, context_frames,
               context_overlap, width, height, length):
        collector = FrameCollector(expected_frames(audio_features, poses, length))
        result = generate(models, reference, audio_features, poses, seed, steps, cfg, context_frames,
                          context_overlap, width, height, length, collector)
        images = collector.images()
        return (images, _fps_of(audio_features), int(result.num_frames))


class EchoMimicV2SampleToFile:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **sampler_inputs(),
                "filename_prefix": ("STRING", {"default": "echomimic_v2/EchoMimicV2",
                                               "tooltip": "Output file prefix (sub-folders allowed), as in Save Video."}),
                "crf": ("INT", {"default": 19, "min": 0, "max": 51,
                                "tooltip": "H.264 quality (lower = better, bigger)."}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Speech to mux as AAC (cut to the video's length)."}),
            },
        }

    RETURN_TYPES = ("VIDEO", "STRING")
    RETURN_NAMES = ("video", "filename")
    FUNCTION = "sample"
    OUTPUT_NODE = True
    CATEGORY = _comfy.CATEGORY
    DESCRIPTION = ("Generates the video and streams every decoded frame straight into an mp4 (H.264 + AAC) in the "
                   "output folder; the file appears only when complete (atomic). Memory stays flat in the "
                   "video length.")

    def sample(self, models, reference, audio_features, poses, seed, steps, cfg, context_frames,
               context_overlap, width, height, length, filename_prefix, crf, audio=None):
        from echomimic_core.video import VideoWriter

        fps = _fps_of(audio_features)
        folder, stem, counter, subfolder = _comfy.save_path(filename_prefix, int(width), int(height))
        filename = f"{stem}_{counter:05}_.mp4"
        path = os.path.join(folder, filename)
        mux = None
        if audio is not None:
            mux = (audio["waveform"][0], int(audio["sample_rate"]))
        # frames go straight into the encoder; the file is renamed into place only when complete and
        # deleted on any error or Cancel (VideoWriter is atomic)
        with VideoWriter(path, fps=fps, audio=mux, crf=int(crf)) as writer:
            generate(models, reference, audio_features, poses, seed, steps, cfg, context_frames,
                     context_overlap, width, height, length, writer.write)
        from comfy_api.input_impl import VideoFromFile

        ui = {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": (True,)}
        return {"ui": ui, "result": (VideoFromFile(path), path)}


NODE_CLASS_MAPPINGS = {
    "EchoMimicV2Sampler": EchoMimicV2Sampler,
    "EchoMimicV2SampleToFile": EchoMimicV2SampleToFile,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EchoMimicV2Sampler": "EchoMimicV2 Sampler",
    "EchoMimicV2SampleToFile": "EchoMimicV2 Sample To File (long videos)",
}
