"""Audio encoder node: core AUDIO -> whisper features per video frame (+ the frame count)."""

from __future__ import annotations

from comfy_api.latest import io
from echomimic_core.errors import InputError

from . import _comfy
from ._edge import node_edge


def feature_frames(features) -> int:
    """Frames of video the speech lasts (AudioFeatures.num_frames = int(duration * fps), as the
    official inference counts them)."""
    for attr in ("num_frames", "frames", "length"):
        value = getattr(features, attr, None)
        if isinstance(value, int):
            return value
    if hasattr(features, "shape"):
        return int(features.shape[0])
    return len(features)


def check_audio(audio) -> None:
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError("EchoMimicV2 Audio Encoder: expected a ComfyUI AUDIO input "
                         "({'waveform': [B, C, T], 'sample_rate': int}), e.g. from Load Audio")
    if audio["waveform"].shape[-1] == 0:
        raise InputError("EchoMimicV2 Audio Encoder: the audio is empty (0 samples)")


class EchoMimicV2AudioEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2AudioEncoder", "EchoMimicV2 Audio Encoder",
            "Whisper-tiny features of the speech, one window per video frame. frame_count is the number of "
            "frames the audio covers at this fps (feed it to Fit Pose Length).",
            inputs=[
                _comfy.Models.Input("models", tooltip="From EchoMimicV2 Model Loader (its audio_processor/tiny.pt)."),
                io.Audio.Input("audio", tooltip="Speech, e.g. from the core Load Audio node (any rate/channels)."),
                io.Float.Input("fps", default=24.0, min=1.0, max=120.0, step=0.01,
                               tooltip="Video frame rate the features are sliced for (the official models use 24)."),
            ],
            outputs=[
                _comfy.AudioFeatures.Output("audio_features", display_name="audio_features",
                                            tooltip="Per-frame whisper features for the sampler."),
                io.Int.Output("frame_count", display_name="frame_count",
                              tooltip="Video frames the speech lasts at this fps."),
                io.Float.Output("fps_out", display_name="fps", tooltip="The fps, passed on."),
            ],
        )

    @classmethod
    @node_edge
    def execute(cls, models, audio, fps) -> io.NodeOutput:
        from echomimic_core.audio import encode_audio

        check_audio(audio)
        encoder = models.get_audio_encoder()
        _comfy.throw_if_interrupted()
        try:
            features = encode_audio(encoder, audio, fps)
        finally:
            models.after_run()
        return io.NodeOutput(features, feature_frames(features), float(fps))


NODES = [EchoMimicV2AudioEncoder]
NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _comfy.legacy_mappings(NODES)
