"""Frames + AUDIO + fps -> ComfyUI's core VIDEO type (saved by the core SaveVideo node)."""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from . import _comfy


def fit_audio(audio: dict | None, frames: int, fps: float) -> dict | None:
    """Cut (or zero-pad) an AUDIO dict to exactly ``frames / fps`` seconds, sample-exact.

    The official inference cuts the speech to the video's length; the core VIDEO writer only trims
    at the end with ceil(), so it is done here once, on the waveform."""
    if audio is None:
        return None
    waveform = audio["waveform"]
    rate = int(audio["sample_rate"])
    if waveform.ndim == 1:
        waveform = waveform[None, None]
    elif waveform.ndim == 2:
        waveform = waveform[None]
    wanted = int(round(frames * rate / float(fps)))
    have = waveform.shape[-1]
    if have >= wanted:
        waveform = waveform[..., :wanted]
    else:
        waveform = torch.nn.functional.pad(waveform, (0, wanted - have))
    return {"waveform": waveform.contiguous(), "sample_rate": rate}


def fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class EchoMimicV2VideoCombine:
    """IMAGE frames + optional AUDIO + fps -> VIDEO (comfy_api VideoFromComponents)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The generated frames (an IMAGE batch)."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 0.01,
                                  "tooltip": "Frame rate; connect the sampler's fps output."}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Speech to mux; cut or padded to the video's length."}),
            },
        }

    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    FUNCTION = "combine"
    CATEGORY = _comfy.CATEGORY
    DESCRIPTION = ("Frames + speech + fps as ComfyUI's VIDEO type (audio cut to the video length); "
                   "save it with the core Save Video node.")

    def combine(self, images, fps, audio=None):
        from comfy_api.input_impl import VideoFromComponents
        from comfy_api.util import VideoComponents

        if images.ndim != 4 or images.shape[0] < 1:
            raise ValueError(f"EchoMimicV2 Video Combine: expected an IMAGE batch [frames, H, W, 3], "
                             f"got shape {tuple(images.shape)}")
        if not fps or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"EchoMimicV2 Video Combine: fps must be positive (got {fps})")
        frames = int(images.shape[0])
        video = VideoFromComponents(VideoComponents(
            images=images[..., :3], audio=fit_audio(audio, frames, fps), frame_rate=fps_fraction(fps)))
        return (video,)


NODE_CLASS_MAPPINGS = {"EchoMimicV2VideoCombine": EchoMimicV2VideoCombine}
NODE_DISPLAY_NAME_MAPPINGS = {"EchoMimicV2VideoCombine": "EchoMimicV2 Video Combine"}
