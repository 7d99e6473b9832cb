"""The tiny fixture pipeline and its recorded inputs, shared by the engine and fast-option tests."""

from __future__ import annotations

import json

import torch


def fixture_pipeline(fixtures):
    from echomimic_core.checkpoints import load_models
    from echomimic_core.pipeline import EchoMimicPipeline

    models = load_models(fixtures / "weights", variant="normal", dtype=torch.float32, device="cpu")
    return EchoMimicPipeline.from_models(models)


def fixture_inputs(fixtures):
    """``(reference image path, whisper chunks, poses [F, 3, H, W] in [0, 1], the recorded call's meta)``."""
    from safetensors.torch import load_file

    meta = json.loads((fixtures / "pipeline" / "pipeline.json").read_text())["call"]
    audio = load_file(str(fixtures / "audio" / "audio.safetensors"))["whisper_chunks"]
    poses = load_file(str(fixtures / "pipeline" / "pipeline.safetensors"))["poses_uint8"].float() / 255.0
    return fixtures / "pipeline" / "ref_image.png", audio, poses, meta
