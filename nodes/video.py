"""Frames + AUDIO + fps -> ComfyUI's core VIDEO type (saved by the core SaveVideo node)."""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from comfy_api.latest import io
from echomimic_core.errors import InputError

from . import _comfy
from ._edge import node_edge


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


class EchoMimicV2VideoCombine(io.ComfyNode):
    """IMAGE frames + optional AUDIO + fps -> VIDEO (comfy_api VideoFromComponents)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2VideoCombine", "EchoMimicV2 Video Combine",
            "Frames + speech + fps as ComfyUI's VIDEO type (audio cut to the video length); save it with the "
            "core Save Video node.",
            inputs=[
                io.Image.Input("images", tooltip="The generated frames (an IMAGE batch)."),
                io.Float.Input("fps", default=24.0, min=1.0, max=120.0, step=0.01,
                               tooltip="Frame rate; connect the sampler's fps output."),
                io.Audio.Input("audio", optional=True, tooltip="Speech to mux; cut or padded to the video's length."),
            ],
            outputs=[io.Video.Output("video", display_name="video", tooltip="For the core Save Video node.")],
        )

    @classmethod
    def validate_inputs(cls, fps):
        # a linked fps arrives as None here (known only at run time)
        if fps is not None and (not math.isfinite(fps) or fps <= 0):
            return f"fps must be positive (got {fps})"
        return True

    @classmethod
    @node_edge
    def execute(cls, images, fps, audio=None) -> io.NodeOutput:
        from comfy_api.latest import InputImpl, Types

        if images.ndim != 4 or images.shape[0] < 1:
            raise InputError(f"EchoMimicV2 Video Combine: expected an IMAGE batch [frames, H, W, 3], "
                             f"got shape {tuple(images.shape)}")
        if not fps or not math.isfinite(fps) or fps <= 0:
            raise InputError(f"EchoMimicV2 Video Combine: fps must be positive (got {fps})")
        frames = int(images.shape[0])
        video = InputImpl.VideoFromComponents(Types.VideoComponents(
            images=images[..., :3], audio=fit_audio(audio, frames, fps), frame_rate=fps_fraction(fps)))
        return io.NodeOutput(video)


NODES = [EchoMimicV2VideoCombine]
NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _comfy.legacy_mappings(NODES)
