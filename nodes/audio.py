"""Audio encoder node: core AUDIO -> whisper features per video frame (+ the frame count)."""

from __future__ import annotations

from . import _comfy


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
        raise ValueError("EchoMimicV2 Audio Encoder: expected a ComfyUI AUDIO input "
                         "({'waveform': [B, C, T], 'sample_rate': int}), e.g. from Load Audio")
    if audio["waveform"].shape[-1] == 0:
        raise ValueError("EchoMimicV2 Audio Encoder: the audio is empty (0 samples)")


class EchoMimicV2AudioEncoder:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "models": (_comfy.MODELS, {"tooltip": "From EchoMimicV2 Model Loader (its audio_processor/tiny.pt)."}),
                "audio": ("AUDIO", {"tooltip": "Speech, e.g. from the core Load Audio node (any rate/channels)."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 0.01,
                                  "tooltip": "Video frame rate the features are sliced for (the official models use 24)."}),
            },
        }

    RETURN_TYPES = (_comfy.AUDIO_FEATURES, "INT", "FLOAT")
    RETURN_NAMES = ("audio_features", "frame_count", "fps")
    FUNCTION = "encode"
    CATEGORY = _comfy.CATEGORY
    DESCRIPTION = ("Whisper-tiny features of the speech, one window per video frame. frame_count is the "
                   "number of frames the audio covers at this fps (feed it to Fit Pose Length).")

    def encode(self, models, audio, fps):
        from echomimic_core.audio import encode_audio

        check_audio(audio)
        encoder = models.get_audio_encoder()
        _comfy.throw_if_interrupted()
        features = encode_audio(encoder, audio, fps)
        return (features, feature_frames(features), float(fps))


NODE_CLASS_MAPPINGS = {"EchoMimicV2AudioEncoder": EchoMimicV2AudioEncoder}
NODE_DISPLAY_NAME_MAPPINGS = {"EchoMimicV2AudioEncoder": "EchoMimicV2 Audio Encoder"}
