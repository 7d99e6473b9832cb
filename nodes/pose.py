"""Pose nodes: load a pose sequence, extract one from video frames, align it to the reference image,
fit its length to the audio, and draw it for preview. ECHOMIMIC_POSES carries an
``echomimic_core.pose.PoseSequence``."""

from __future__ import annotations

import os
import threading

from . import _comfy

BACKENDS = ["mediapipe", "dwpose"]
POLICIES = ["loop", "pingpong", "hold", "trim"]  # echomimic_core.pose.length.POLICIES, "loop" first (default)
_POSE_FILE_EXTS = (".npz", ".json")


# ------------------------------------------------------------------ pose sources in the input folder
def _is_pose_folder(path: str) -> bool:
    try:
        return any(name.endswith(".npy") and name[:-4].lstrip("-").isdigit() for name in os.listdir(path))
    except OSError:
        return False


def list_pose_sources() -> list[str]:
    """Pose sequences under the input folder: official .npy folders and our .npz/.json files in
    <input>/echomimic_poses/ (one level of sub-folders), plus .npy folders directly in <input>/."""
    base = _comfy.input_directory()
    found: list[str] = []
    poses_dir = os.path.join(base, _comfy.POSE_INPUT_SUBDIR)
    if os.path.isdir(poses_dir):
        if _is_pose_folder(poses_dir):
            found.append(_comfy.POSE_INPUT_SUBDIR)
        for name in sorted(os.listdir(poses_dir)):
            path = os.path.join(poses_dir, name)
            rel = f"{_comfy.POSE_INPUT_SUBDIR}/{name}"
            if os.path.isdir(path):
                if _is_pose_folder(path):
                    found.append(rel)
                for sub in sorted(os.listdir(path)):
                    sp = os.path.join(path, sub)
                    if os.path.isdir(sp) and _is_pose_folder(sp):
                        found.append(f"{rel}/{sub}")
                    elif sub.endswith(_POSE_FILE_EXTS) and os.path.isfile(sp):
                        found.append(f"{rel}/{sub}")
            elif name.endswith(_POSE_FILE_EXTS):
                found.append(rel)
    if os.path.isdir(base):
        for name in sorted(os.listdir(base)):
            path = os.path.join(base, name)
            if name != _comfy.POSE_INPUT_SUBDIR and os.path.isdir(path) and _is_pose_folder(path):
                found.append(name)
    return found or [f"{_comfy.POSE_INPUT_SUBDIR}/(put pose folders here)"]


def resolve_pose_source(pose_source: str, path: str = "") -> str:
    if path and path.strip():
        return os.path.expanduser(path.strip())
    base = os.path.abspath(_comfy.input_directory())
    full = os.path.normpath(os.path.join(base, pose_source))
    if os.path.commonpath([full, base]) != base:
        raise ValueError(f"pose source {pose_source!r} is outside the input folder")
    if not os.path.exists(full):
        raise FileNotFoundError(
            f"EchoMimicV2 Load Poses: {full} does not exist. Put an official pose folder (0.npy, 1.npy, ...) "
            f"or a .npz/.json pose file into {os.path.join(base, _comfy.POSE_INPUT_SUBDIR)}/, or give a path.")
    return full


def resample_indices(total: int, fps: float, target_fps: float) -> list[int]:
    """Source frame for each output frame when ``total`` frames at ``fps`` are played at
    ``target_fps``: the frame shown at time k / target_fps (nearest earlier frame). 0 = all frames."""
    if not target_fps or abs(target_fps - fps) < 1e-6:
        return list(range(total))
    duration = total / fps
    count = max(1, int(duration * target_fps + 1e-6))
    return [min(total - 1, int(k * fps / target_fps + 1e-6)) for k in range(count)]


# ------------------------------------------------------------------ extractors (cached per backend)
_EXTRACTORS: dict = {}
_EXTRACTOR_LOCK = threading.Lock()


def _dwpose_dir() -> str | None:
    for _, root in _comfy.model_search_roots():
        for sub in ("dwpose", ""):
            d = os.path.join(root, sub) if sub else root
            if os.path.isfile(os.path.join(d, "yolox_l.onnx")) and os.path.isfile(os.path.join(d, "dw-ll_ucoco_384.onnx")):
                return d
    return None


def get_extractor(backend: str):
    """A pose extractor ``fn(rgb_uint8[H, W, 3]) -> frame dict``; DWPose reads its .onnx files from
    models/echomimic_v2/dwpose (or models/dwpose)."""
    if backend not in BACKENDS:
        raise ValueError(f"pose backend must be one of {BACKENDS}, got {backend!r}")
    with _EXTRACTOR_LOCK:
        extractor = _EXTRACTORS.get(backend)
        if extractor is None:
            if backend == "dwpose":
                import folder_paths
                from echomimic_core.pose import DWPoseExtractor

                extractor = DWPoseExtractor(model_dir=_dwpose_dir(), models_root=folder_paths.models_dir)
            else:
                from echomimic_core.pose import MediaPipeExtractor

                extractor = MediaPipeExtractor()
            _EXTRACTORS[backend] = extractor
        return extractor


# ------------------------------------------------------------------ nodes
class EchoMimicV2LoadPoses:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose_source": (list_pose_sources(), {
                    "tooltip": "An official pose folder (0.npy, 1.npy, ...) or a .npz/.json pose file under "
                               "ComfyUI/input/echomimic_poses/."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 0.01,
                                  "tooltip": "Frame rate the sequence was made for (official demo poses: 24)."}),
            },
            "optional": {
                "path": ("STRING", {"default": "", "tooltip": "Absolute path of a pose folder/file; overrides "
                                                              "pose_source when not empty."}),
            },
        }

    RETURN_TYPES = (_comfy.POSES, "INT")
    RETURN_NAMES = ("poses", "frame_count")
    FUNCTION = "load"
    CATEGORY = _comfy.CATEGORY
    DESCRIPTION = "Loads a hand-pose sequence (official demo .npy folder, or a file saved by this pack)."

    def load(self, pose_source, fps, path=""):
        from echomimic_core.pose import load_pose_sequence

        seq = load_pose_sequence(resolve_pose_source(pose_source, path), fps=float(fps))
        return (seq, len(seq))

    @classmethod
    def IS_CHANGED(cls, pose_source, fps, path=""):
        try:
            full = resolve_pose_source(pose_source, path)
            st = os.stat(full)
            return f"{full}:{st.st_mtime_ns}:{len(os.listdir(full)) if os.path.isdir(full) else st.st_size}"
        except (OSError, ValueError):
            return float("nan")


class EchoMimicV2ExtractPoses:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Driving video frames, e.g. from Get Video Components."}),
                "backend": (BACKENDS, {"default": "mediapipe",
                                       "tooltip": "mediapipe: bundled models, CPU. dwpose: the official extractor; "
                                                  "needs yolox_l.onnx + dw-ll_ucoco_384.onnx in models/echomimic_v2/dwpose."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 240.0, "step": 0.01,
                                  "tooltip": "Frame rate of the driving frames (connect Get Video Components' fps)."}),
                "target_fps": ("FLOAT", {"default": 24.0, "min": 0.0, "max": 240.0, "step": 0.01,
                                         "tooltip": "Resample the motion to this frame rate (nearest frame in time) so "
                                                    "it plays at the right speed in a video of that fps (the models "
                                                    "use 24). 0 keeps every frame."}),
            },
        }

    RETURN_TYPES = (_comfy.POSES, "INT")
    RETURN_NAMES = ("poses", "frame_count")
    FUNCTION = "extract"
    CATEGORY = _comfy.CATEGORY
    DESCRIPTION = ("Detects body/hand/face keypoints in every frame and normalises them to one upper-body box for "
                   "the whole clip (the official driving-video preprocessing).")

    def extract(self, images, backend, fps, target_fps=24.0):
        from echomimic_core.pose import extract_sequence

        if images.ndim != 4 or images.shape[0] < 1:
            raise ValueError(f"EchoMimicV2 Extract Poses: expected an IMAGE batch, got shape {tuple(images.shape)}")
        indices = resample_indices(int(images.shape[0]), float(fps), float(target_fps))
        bar = _comfy.Progress(len(indices))

        def frames():  # one uint8 frame at a time; the interrupt is honoured between frames
            for i in indices:
                _comfy.throw_if_interrupted()
                yield _comfy.image_to_uint8(images, i)

        out_fps = float(target_fps) if target_fps else float(fps)
        seq, _ = extract_sequence(frames(), get_extractor(backend), fps=out_fps,
                                  progress=lambda k: bar(k + 1, len(indices)))
        return (seq, len(seq))


class EchoMimicV2AlignPoses:
    MODES = ["align_poses", "crop_reference_and_align"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "poses": (_comfy.POSES,),
                "reference": ("IMAGE", {"tooltip": "The reference image the video will be made from."}),
                "backend": (BACKENDS, {"default": "mediapipe", "tooltip": "Extractor used on the reference image."}),
                "mode": (cls.MODES, {"default": "align_poses",
                                     "tooltip": "align_poses: move/scale the poses onto the reference person. "
                                                "crop_reference_and_align: first crop the reference to the official "
                                                "square upper-body box (demo notebook), then align to the crop."}),
            },
        }

    RETURN_TYPES = (_comfy.POSES, "IMAGE")
    RETURN_NAMES = ("poses", "reference")
    FUNCTION = "align"
    CATEGORY = _comfy.CATEGORY
    DESCRIPTION = ("Moves and scales the pose sequence so its person (face top, neck, shoulders) sits where the "
                   "reference person is; optionally crops the reference like the official demo.")

    def align(self, poses, reference, backend, mode):
        from echomimic_core.pose import align_to_reference, crop_reference

        ref = _comfy.image_to_uint8(reference, 0)
        keypoints = get_extractor(backend)(ref)
        if mode == "crop_reference_and_align":
            ref, keypoints, _ = crop_reference(ref, keypoints)
            out_ref = _comfy.uint8_to_image(ref)
        else:
            out_ref = reference[:1]
        aligned = align_to_reference(poses, keypoints, reference_size=ref.shape[:2])
        return (aligned, out_ref)


class EchoMimicV2FitPoseLength:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "poses": (_comfy.POSES,),
                "frame_count": ("INT", {"default": 0, "min": 0, "max": 100000,
                                        "tooltip": "Target length; connect the audio encoder's frame_count. 0 keeps "
                                                   "the sequence as it is."}),
                "policy": (POLICIES, {"default": "loop",
                                      "tooltip": "How a shorter sequence is lengthened (a longer one is cut): loop, "
                                                 "pingpong (back and forth), hold (repeat the last frame), trim "
                                                 "(error when too short)."}),
            },
        }

    RETURN_TYPES = (_comfy.POSES, "INT")
    RETURN_NAMES = ("poses", "frame_count")
    FUNCTION = "fit"
    CATEGORY = _comfy.CATEGORY
    DESCRIPTION = "Cuts or lengthens the pose sequence to the number of video frames."

    def fit(self, poses, frame_count, policy):
        from echomimic_core.pose import fit_length

        if int(frame_count) <= 0:
            return (poses, len(poses))
        seq = fit_length(poses, int(frame_count), policy)
        return (seq, len(seq))


class EchoMimicV2PosePreview:
    PARTS = ["hands (model input)", "body+hands+face"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "poses": (_comfy.POSES,),
                "width": ("INT", {"default": 768, "min": 8, "max": 4096, "step": 8}),
                "height": ("INT", {"default": 768, "min": 8, "max": 4096, "step": 8}),
                "parts": (cls.PARTS, {"default": "hands (model input)",
                                      "tooltip": "hands: exactly the pose image the sampler feeds the model."}),
                "max_frames": ("INT", {"default": 0, "min": 0, "max": 100000,
                                       "tooltip": "Draw at most this many frames (0 = all)."}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    FUNCTION = "draw"
    CATEGORY = _comfy.CATEGORY
    DESCRIPTION = "Draws the pose sequence as an IMAGE batch (for Preview Image / Create Video)."

    def draw(self, poses, width, height, parts, max_frames):
        from echomimic_core.pose import render_frames

        n = len(poses) if not max_frames else min(len(poses), int(max_frames))
        if n == 0:
            raise ValueError("EchoMimicV2 Pose Preview: the pose sequence is empty")
        kwargs = {} if parts == self.PARTS[0] else {"parts": _all_parts()}
        frames = render_frames(poses, range(n), int(height), int(width), **kwargs)
        return (_comfy.uint8_to_image(frames),)


def _all_parts():
    from echomimic_core.pose import draw

    return getattr(draw, "ALL_PARTS")


NODE_CLASS_MAPPINGS = {
    "EchoMimicV2LoadPoses": EchoMimicV2LoadPoses,
    "EchoMimicV2ExtractPoses": EchoMimicV2ExtractPoses,
    "EchoMimicV2AlignPoses": EchoMimicV2AlignPoses,
    "EchoMimicV2FitPoseLength": EchoMimicV2FitPoseLength,
    "EchoMimicV2PosePreview": EchoMimicV2PosePreview,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EchoMimicV2LoadPoses": "EchoMimicV2 Load Poses",
    "EchoMimicV2ExtractPoses": "EchoMimicV2 Extract Poses (video frames)",
    "EchoMimicV2AlignPoses": "EchoMimicV2 Align Poses to Reference",
    "EchoMimicV2FitPoseLength": "EchoMimicV2 Fit Pose Length",
    "EchoMimicV2PosePreview": "EchoMimicV2 Pose Preview",
}
