"""Demo inputs node: the reference figure, speech and hand poses shipped with the pack
(echomimic_core/assets/demo), so the embedded-demo workflow runs without any file in ComfyUI/input."""

from __future__ import annotations

import os

from comfy_api.latest import io

from . import _comfy
from ._edge import node_edge


def demo_inputs_dir() -> str:
    import echomimic_core

    return os.path.join(os.path.dirname(os.path.abspath(echomimic_core.__file__)), "assets", "demo")


class EchoMimicV2DemoInputs(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2DemoInputs", "EchoMimicV2 Demo Inputs",
            "The demo inputs shipped with the pack: a synthetic reference figure (64x64), 16 kHz speech and its "
            "hand-pose sequence (for the '(embedded demo)' model).",
            inputs=[],
            outputs=[
                io.Image.Output("reference", display_name="reference", tooltip="The demo reference figure."),
                io.Audio.Output("audio", display_name="audio", tooltip="The demo speech (16 kHz mono)."),
                _comfy.Poses.Output("poses", display_name="poses", tooltip="The demo hand-pose sequence."),
                io.Int.Output("frame_count", display_name="frame_count", tooltip="Frames in the pose sequence."),
            ],
        )

    @classmethod
    @node_edge
    def execute(cls) -> io.NodeOutput:
        import numpy as np
        import torch

        from echomimic_core.audio import load_waveform
        from echomimic_core.pipeline import load_reference_image
        from echomimic_core.pose import load_pose_sequence

        d = demo_inputs_dir()
        image = np.asarray(load_reference_image(os.path.join(d, "reference.png")), dtype=np.float32) / 255.0
        wave = load_waveform(os.path.join(d, "audio.wav"))
        audio = {"waveform": torch.from_numpy(np.ascontiguousarray(wave)).float().view(1, 1, -1),
                 "sample_rate": 16000}
        seq = load_pose_sequence(os.path.join(d, "poses.npz"))
        return io.NodeOutput(torch.from_numpy(image)[None], audio, seq, len(seq))


NODES = [EchoMimicV2DemoInputs]
NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _comfy.legacy_mappings(NODES)
