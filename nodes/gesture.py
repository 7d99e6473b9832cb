"""Gesture nodes (V3): hand poses from the speech alone, from a pose library, or still hands.

Both output ECHOMIMIC_POSES (an ``echomimic_core.pose.PoseSequence`` normalised to the reference
image, one frame per video frame of the audio), ready for the sampler and the Pose Preview node.
"""

from __future__ import annotations

import os
import warnings

from comfy_api.latest import io
from echomimic_core.errors import InputError

from . import _comfy
from ._edge import node_edge
from .pose import BACKENDS, extractor_session

_MODELS: dict = {}


def _gesture_model(folder: str):
    from echomimic_core.gesture import load_gesture_model

    key = folder.strip() or "<embedded>"
    if key not in _MODELS:
        _MODELS[key] = load_gesture_model(folder.strip() or None)
    return _MODELS[key]


def _reference(reference, backend: str, reference_pose=None):
    """(frame | None, (H, W)) of the reference person: frame 0 of ``reference_pose`` when connected,
    else the extractor on the image (None + a warning when it finds nobody)."""
    from echomimic_core.errors import EchoMimicError
    from echomimic_core.gesture.motion import Anchor

    img = _comfy.image_to_uint8(reference, 0)
    if reference_pose is not None and len(reference_pose):
        return reference_pose[0], img.shape[:2]
    try:
        with extractor_session(backend) as extractor:
            frame = extractor(img)
        Anchor(frame, img.shape[:2])
        return frame, img.shape[:2]
    except EchoMimicError as exc:
        warnings.warn(f"EchoMimicV2 Gestures: no usable person in the reference image ({exc}); "
                      "using the gesture model's average body layout")
        return None, img.shape[:2]


def _frames(audio_features, max_frames: int) -> int:
    n = int(getattr(audio_features, "num_frames", 0) or len(getattr(audio_features, "chunks", [])))
    return min(n, max_frames) if max_frames > 0 else n


def _outputs():
    return [_comfy.Poses.Output("poses_out", display_name="poses", tooltip="One pose frame per video frame."),
            io.Int.Output("frame_count_out", display_name="frame_count", tooltip="Number of frames (the audio's length).")]


class EchoMimicV2GesturesFromAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2GesturesFromAudio", "EchoMimicV2 Gestures From Audio",
            "Hand/arm poses generated from the speech (no pose file needed), anchored on the reference person's "
            "own pose; or still hands (the reference's hands held, lip-sync only).",
            inputs=[
                _comfy.AudioFeatures.Input("audio_features", tooltip="From EchoMimicV2 Audio Encoder."),
                io.Image.Input("reference", tooltip="The reference image the video is made from."),
                io.Combo.Input("mode", options=["audio", "still"], default="audio",
                               tooltip="audio: gestures from the speech; still: hold the reference's own hands"),
                io.Int.Input("seed", default=0, min=0, max=2 ** 31 - 1, tooltip="Which performance (same seed = same gestures)."),
                io.Float.Input("motion_amount", default=1.0, min=0.0, max=3.0, step=0.05,
                               tooltip="Gesture size around the reference pose (0 = still, 1 = as trained)."),
                io.Combo.Input("backend", options=BACKENDS, default="mediapipe",
                               tooltip="Extractor that finds the reference person's pose."),
                _comfy.Poses.Input("reference_pose", optional=True,
                                   tooltip="Optional: the reference person's pose (frame 0 is used) instead of detecting it."),
                io.Int.Input("max_frames", default=0, min=0, max=100000, optional=True,
                             tooltip="Cap on the number of frames; 0 = as long as the audio."),
                _comfy.advanced(io.String.Input(
                    "gesture_model", default="", optional=True,
                    tooltip="Folder of a model trained with train/gesture.py (empty = the embedded one).")),
            ],
            outputs=_outputs(),
        )

    @classmethod
    @node_edge
    def execute(cls, audio_features, reference, mode, seed, motion_amount, backend, reference_pose=None,
                max_frames=0, gesture_model="") -> io.NodeOutput:
        from echomimic_core.gesture import poses_for

        ref, size = _reference(reference, backend, reference_pose)
        if ref is None and mode == "still":
            raise InputError("EchoMimicV2 Gestures From Audio: still hands need the reference person's pose; "
                             "none was found in the image - connect reference_pose")
        n = _frames(audio_features, max_frames)
        seq = poses_for(ref, audio_features, n, mode, model=_gesture_model(gesture_model) if mode == "audio" else None,
                        seed=seed, amount=motion_amount, size=size, fps=float(getattr(audio_features, "fps", 24.0)))
        return io.NodeOutput(seq, len(seq))


class EchoMimicV2PoseLibrary(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2PoseLibrary", "EchoMimicV2 Pose Library",
            "A pose sequence exactly as long as the audio, built from a folder of pose clips: segments cut at the "
            "pauses of the speech and cross-faded so joins do not jump, placed on the reference person's body.",
            inputs=[
                _comfy.AudioFeatures.Input("audio_features", tooltip="From EchoMimicV2 Audio Encoder (length and pauses)."),
                io.Image.Input("reference", tooltip="The reference image the video is made from."),
                io.String.Input("library", default=_comfy.POSE_INPUT_SUBDIR,
                                tooltip="Folder of pose clips (official N.npy folders or .npz/.json files), relative "
                                        "to the input folder or absolute."),
                io.Int.Input("seed", default=0, min=0, max=2 ** 31 - 1, tooltip="Which segments are chosen."),
                _comfy.advanced(io.Float.Input("join_step", default=0.01, min=0.001, max=0.2, step=0.001,
                                               tooltip="Extra per-frame movement a join may add (fraction of the image).")),
                io.Combo.Input("backend", options=BACKENDS, default="mediapipe",
                               tooltip="Extractor that finds the reference person's pose."),
                _comfy.Poses.Input("reference_pose", optional=True,
                                   tooltip="Optional: the reference person's pose (frame 0 is used) instead of detecting it."),
            ],
            outputs=_outputs(),
        )

    @classmethod
    @node_edge
    def execute(cls, audio_features, reference, library, seed, join_step, backend, reference_pose=None) -> io.NodeOutput:
        from echomimic_core.gesture import load_library, poses_for

        path = library.strip()
        if not os.path.isabs(path):
            path = os.path.join(_comfy.input_directory(), path)
        if not os.path.isdir(path):
            raise InputError(f"EchoMimicV2 Pose Library: {path} is not a folder of pose clips")
        clips = load_library([path])
        ref, size = _reference(reference, backend, reference_pose)
        n = _frames(audio_features, 0)
        seq = poses_for(ref, audio_features, n, "library", waveform=getattr(audio_features, "waveform", None),
                        library=clips, seed=seed, size=size, join_step=join_step,
                        fps=float(getattr(audio_features, "fps", 24.0)))
        return io.NodeOutput(seq, len(seq))


NODES = [EchoMimicV2GesturesFromAudio, EchoMimicV2PoseLibrary]
NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _comfy.legacy_mappings(NODES)
