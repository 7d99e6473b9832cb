"""Hand/body pose sequences for EchoMimicV2: format, safe loading, drawing, extraction, alignment
and length fitting.

Public API
----------
Data and files
    ``PoseSequence(frames, draw_params=FULL_CANVAS, fps=24.0, ref_w=800)`` - ``len()``, ``[i]``,
    ``select(indices)``, ``copy()``, ``frame_draw_params(i)``, ``PoseSequence.from_frames(...)``,
    ``to_arrays()`` / ``PoseSequence.from_arrays(...)``.
    ``PoseArrays`` - dense one-person arrays ``[F, ...]`` (the trainer's ``keypoints.npz``).
    ``load_pose_sequence(path)`` - official ``k.npy`` folder (safe restricted unpickler), our
    ``.npz``/``.json`` (versioned), or one ``.npy`` frame.
    ``save_pose_sequence(seq, path)`` - ``.npz``/``.json`` -> our file; a folder -> official layout.
    ``safe_load_npy(path)`` - one official ``.npy`` without executing pickle code.
    ``scale_draw_params(params, H, W)`` - 768-based ``draw_pose_params`` for another output size.
Drawing (RGB uint8 ``[H, W, 3]``)
    ``draw_hands(frame, H, W, draw_params=None)`` - the inference condition, pixel-identical to the
    official ``draw_pose_select_v2`` + paste. ``draw_pose_select_v2(frame, H, W, ref_w=800)``.
    ``draw_full_pose(frame, H, W, parts="init"|"no_lips"|"no_head"|"hands"|{...})``.
    ``render_frames(seq, indices, H, W, parts=None) -> [n, H, W, 3]`` - only the frames asked for.
Extraction (``__call__(rgb_uint8) -> frame dict``)
    ``DWPoseExtractor(model_dir=None, models_root=None)`` - onnxruntime on local
    ``yolox_l.onnx`` + ``dw-ll_ucoco_384.onnx``; ``find_dwpose_files(...)``.
    ``MediaPipeExtractor()`` - mediapipe 0.10.21 Holistic, no download.
    ``get_backend(name)`` / ``create_extractor(name, model_dir=None, models_roots=())`` /
    ``backend_names()`` - the backend registry (capabilities, needed model files); :mod:`.backends`.
    ``extract_sequence(frames, extractor, fps=24, align=True)`` - driving video frames -> (sequence,
    box params), the official preprocessing; ``official_frame_stride(avg_fps)``.
Alignment
    ``align_to_reference(seq, reference_keypoints, reference_size=(768, 768), anchor="all")``,
    ``crop_reference(image, keypoints)``, ``get_pose_params(...)``, ``resize_and_pad(...)``,
    ``sequence_from_detections(detections, H, W)``.
Length
    ``fit_length(seq, n, policy)`` and ``fit_length_indices(length, n, policy)``;
    policies ``trim``, ``loop``, ``pingpong``, ``hold``.
"""

from .align import (align_to_reference, crop_reference, frame_anchors, get_pose_params, main_person,
                    normalize_to_box, resize_and_pad, resize_and_pad_param, sequence_from_detections)
from .draw import (ALL_PARTS, POSE_CONDITIONS, draw_full_pose, draw_full_pose_canvas, draw_hands,
                   draw_pose_select_v2, render_frames)
from .arrays import PoseArrays
from .backends import PoseBackend, backend_names, create_extractor, get_backend, register_backend
from .dwpose import DET_FILE, POSE_FILE, DWPoseExtractor, find_dwpose_files
from .extract import extract_sequence, official_frame_stride
from .formats import (BASE_SIZE, FULL_CANVAS, PoseSequence, empty_frame, normalize_frame, scale_draw_params,
                      validate_draw_params)
from .io import load_pose_sequence, save_official_folder, save_pose_sequence
from .length import POLICIES, fit_length, fit_length_indices
from .mediapipe_backend import MediaPipeExtractor
from .safe_load import safe_load_npy

__all__ = [
    "PoseSequence", "PoseArrays", "load_pose_sequence", "save_pose_sequence", "save_official_folder", "safe_load_npy",
    "normalize_frame", "empty_frame", "scale_draw_params", "validate_draw_params", "BASE_SIZE", "FULL_CANVAS",
    "draw_hands", "draw_pose_select_v2", "draw_full_pose", "draw_full_pose_canvas", "render_frames",
    "POSE_CONDITIONS", "ALL_PARTS",
    "PoseBackend", "backend_names", "create_extractor", "get_backend", "register_backend",
    "DWPoseExtractor", "find_dwpose_files", "extract_sequence", "official_frame_stride", "DET_FILE", "POSE_FILE", "MediaPipeExtractor",
    "align_to_reference", "crop_reference", "get_pose_params", "resize_and_pad", "resize_and_pad_param",
    "sequence_from_detections", "normalize_to_box", "main_person", "frame_anchors",
    "fit_length", "fit_length_indices", "POLICIES",
]
