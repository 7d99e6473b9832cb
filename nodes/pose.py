"""Pose nodes: load a pose sequence, extract one from video frames, align it to the reference image,
fit its length to the audio, and draw it for preview. ECHOMIMIC_POSES carries an
``echomimic_core.pose.PoseSequence``.

The pose extractors (mediapipe graphs, DWPose onnxruntime sessions) live only while one node runs
(``extractor_session``) and are closed afterwards, so nothing the pack holds outlives ComfyUI's own
memory management."""

from __future__ import annotations

import contextlib
import os

from comfy_api.latest import io
from echomimic_core.errors import InputError

from . import _comfy
from ._edge import node_edge


def _backend_names() -> list[str]:
    from echomimic_core.pose.backends import backend_names

    return backend_names()


BACKENDS = _backend_names()
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


#: set to 1 to let Load Poses' ``path`` widget read pose files outside ComfyUI's input folder
ALLOW_PATHS_ENV = "ECHOMIMIC_ALLOW_POSE_PATHS"


def resolve_pose_source(pose_source: str, path: str = "") -> str:
    """The pose file/folder a Load Poses node names. A workflow is untrusted input: every path resolves
    (symlinks included) inside ComfyUI's input folder, checked before anything is looked up, so a workflow
    can neither probe which paths exist nor read a file elsewhere; paths outside only with the
    ``ECHOMIMIC_ALLOW_POSE_PATHS=1`` opt-in of whoever starts the server."""
    base = os.path.realpath(_comfy.input_directory())
    custom = bool(path and path.strip())
    full = os.path.realpath(os.path.expanduser(path.strip()) if custom else os.path.join(base, pose_source))
    if os.path.commonpath([full, base]) != base and not (custom and os.environ.get(ALLOW_PATHS_ENV) == "1"):
        raise InputError(f"EchoMimicV2 Load Poses: pose paths must lie inside ComfyUI's input folder {base} "
                         f"(symlinks are resolved); move the poses to {os.path.join(base, _comfy.POSE_INPUT_SUBDIR)}/ "
                         f"or start ComfyUI with {ALLOW_PATHS_ENV}=1 to allow other paths")
    if not os.path.exists(full):
        raise InputError(
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


# ------------------------------------------------------------------ extractors (one per node run)
def make_extractor(backend: str):
    """A pose extractor ``fn(rgb_uint8[H, W, 3]) -> frame dict`` from the library's backend registry;
    model files (DWPose .onnx) are searched for in ComfyUI's model folders (models/echomimic_v2/dwpose,
    models/dwpose, ...)."""
    import folder_paths
    from echomimic_core.pose.backends import get_backend

    spec = get_backend(backend)
    return spec.create(models_roots=[root for _, root in _comfy.model_search_roots()] + [folder_paths.models_dir])


@contextlib.contextmanager
def extractor_session(backend: str):
    """The extractor for one node run; its sessions are closed (and dropped) when the node is done."""
    extractor = make_extractor(backend)
    try:
        yield extractor
    finally:
        close = getattr(extractor, "close", None)
        if callable(close):
            close()
        del extractor


def _check_backend(backend):
    return True if backend in BACKENDS else f"backend must be one of {BACKENDS}, got {backend!r}"


# ------------------------------------------------------------------ nodes
class EchoMimicV2LoadPoses(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2LoadPoses", "EchoMimicV2 Load Poses",
            "Loads a hand-pose sequence (official demo .npy folder, or a file saved by this pack).",
            inputs=[
                io.Combo.Input("pose_source", options=list_pose_sources(), tooltip=(
                    "An official pose folder (0.npy, 1.npy, ...) or a .npz/.json pose file under "
                    "ComfyUI/input/echomimic_poses/.")),
                io.Float.Input("fps", default=24.0, min=1.0, max=120.0, step=0.01,
                               tooltip="Frame rate the sequence was made for (official demo poses: 24)."),
                _comfy.advanced(io.String.Input("path", default="", optional=True, tooltip=(
                    "Path of a pose folder/file inside ComfyUI's input folder; overrides pose_source when not empty "
                    "(paths elsewhere need ECHOMIMIC_ALLOW_POSE_PATHS=1 when ComfyUI starts)."))),
            ],
            outputs=[_comfy.Poses.Output("poses", display_name="poses", tooltip="The pose sequence."),
                     io.Int.Output("frame_count", display_name="frame_count", tooltip="Frames in the sequence.")],
        )

    @classmethod
    @node_edge
    def execute(cls, pose_source, fps, path="") -> io.NodeOutput:
        from echomimic_core.pose import load_pose_sequence

        seq = load_pose_sequence(resolve_pose_source(pose_source, path), fps=float(fps))
        return io.NodeOutput(seq, len(seq))

    @classmethod
    def fingerprint_inputs(cls, pose_source, fps, path=""):
        # the pose files may change on disk under the same name
        try:
            full = resolve_pose_source(pose_source, path)
            st = os.stat(full)
            return f"{full}:{st.st_mtime_ns}:{len(os.listdir(full)) if os.path.isdir(full) else st.st_size}"
        except (OSError, ValueError):
            return float("nan")


class EchoMimicV2ExtractPoses(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2ExtractPoses", "EchoMimicV2 Extract Poses (video frames)",
            "Detects body/hand/face keypoints in every frame and normalises them to one upper-body box for the "
            "whole clip (the official driving-video preprocessing).",
            inputs=[
                io.Image.Input("images", tooltip="Driving video frames, e.g. from Get Video Components."),
                io.Combo.Input("backend", options=BACKENDS, default="mediapipe", tooltip=(
                    "mediapipe: bundled models, CPU. dwpose: the official extractor; needs yolox_l.onnx + "
                    "dw-ll_ucoco_384.onnx in models/echomimic_v2/dwpose.")),
                io.Float.Input("fps", default=24.0, min=1.0, max=240.0, step=0.01,
                               tooltip="Frame rate of the driving frames (connect Get Video Components' fps)."),
                _comfy.advanced(io.Float.Input("target_fps", default=24.0, min=0.0, max=240.0, step=0.01, tooltip=(
                    "Resample the motion to this frame rate (nearest frame in time) so it plays at the right "
                    "speed in a video of that fps (the models use 24). 0 keeps every frame."))),
            ],
            outputs=[_comfy.Poses.Output("poses", display_name="poses", tooltip="The extracted pose sequence."),
                     io.Int.Output("frame_count", display_name="frame_count", tooltip="Frames in the sequence.")],
        )

    @classmethod
    def validate_inputs(cls, backend):
        return _check_backend(backend)

    @classmethod
    @node_edge
    def execute(cls, images, backend, fps, target_fps=24.0) -> io.NodeOutput:
        from echomimic_core.pose import extract_sequence

        if images.ndim != 4 or images.shape[0] < 1:
            raise InputError(f"EchoMimicV2 Extract Poses: expected an IMAGE batch, got shape {tuple(images.shape)}")
        indices = resample_indices(int(images.shape[0]), float(fps), float(target_fps))
        bar = _comfy.Progress(len(indices), _comfy.node_id_of(cls))

        def frames():  # one uint8 frame at a time; the interrupt is honoured between frames
            for i in indices:
                _comfy.throw_if_interrupted()
                yield _comfy.image_to_uint8(images, i)

        out_fps = float(target_fps) if target_fps else float(fps)
        with extractor_session(backend) as extractor:
            seq, _ = extract_sequence(frames(), extractor, fps=out_fps,
                                      progress=lambda k: bar(k + 1, len(indices)))
        return io.NodeOutput(seq, len(seq))


class EchoMimicV2AlignPoses(io.ComfyNode):
    MODES = ["align_poses", "crop_reference_and_align"]

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2AlignPoses", "EchoMimicV2 Align Poses to Reference",
            "Moves and scales the pose sequence so its person (face top, neck, shoulders) sits where the "
            "reference person is; optionally crops the reference like the official demo.",
            inputs=[
                _comfy.Poses.Input("poses", tooltip="The pose sequence to move onto the reference person."),
                io.Image.Input("reference", tooltip="The reference image the video will be made from."),
                io.Combo.Input("backend", options=BACKENDS, default="mediapipe",
                               tooltip="Extractor used on the reference image."),
                io.Combo.Input("mode", options=cls.MODES, default="align_poses", tooltip=(
                    "align_poses: move/scale the poses onto the reference person. crop_reference_and_align: "
                    "first crop the reference to the official square upper-body box (demo notebook), then align "
                    "to the crop.")),
            ],
            outputs=[_comfy.Poses.Output("poses_out", display_name="poses", tooltip="The aligned poses."),
                     io.Image.Output("reference_out", display_name="reference",
                                     tooltip="The reference (cropped in crop_reference_and_align mode).")],
        )

    @classmethod
    def validate_inputs(cls, backend):
        return _check_backend(backend)

    @classmethod
    @node_edge
    def execute(cls, poses, reference, backend, mode) -> io.NodeOutput:
        from echomimic_core.pose import align_to_reference, crop_reference

        ref = _comfy.image_to_uint8(reference, 0)
        with extractor_session(backend) as extractor:
            keypoints = extractor(ref)
        if mode == "crop_reference_and_align":
            ref, keypoints, _ = crop_reference(ref, keypoints)
            out_ref = _comfy.uint8_to_image(ref)
        else:
            out_ref = reference[:1]
        aligned = align_to_reference(poses, keypoints, reference_size=ref.shape[:2])
        return io.NodeOutput(aligned, out_ref)


class EchoMimicV2FitPoseLength(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2FitPoseLength", "EchoMimicV2 Fit Pose Length",
            "Cuts or lengthens the pose sequence to the number of video frames.",
            inputs=[
                _comfy.Poses.Input("poses", tooltip="The pose sequence."),
                io.Int.Input("frame_count", default=0, min=0, max=100000, tooltip=(
                    "Target length; connect the audio encoder's frame_count. 0 keeps the sequence as it is.")),
                io.Combo.Input("policy", options=POLICIES, default="loop", tooltip=(
                    "How a shorter sequence is lengthened (a longer one is cut): loop, pingpong (back and forth), "
                    "hold (repeat the last frame), trim (error when too short).")),
            ],
            outputs=[_comfy.Poses.Output("poses_out", display_name="poses", tooltip="The fitted poses."),
                     io.Int.Output("frame_count_out", display_name="frame_count", tooltip="Frames now.")],
        )

    @classmethod
    def validate_inputs(cls, policy):
        return True if policy in POLICIES else f"policy must be one of {POLICIES}, got {policy!r}"

    @classmethod
    @node_edge
    def execute(cls, poses, frame_count, policy) -> io.NodeOutput:
        from echomimic_core.pose import fit_length

        if int(frame_count) <= 0:
            return io.NodeOutput(poses, len(poses))
        seq = fit_length(poses, int(frame_count), policy)
        return io.NodeOutput(seq, len(seq))


class EchoMimicV2PosePreview(io.ComfyNode):
    PARTS = ["hands (model input)", "body+hands+face"]

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _comfy.schema(
            "EchoMimicV2PosePreview", "EchoMimicV2 Pose Preview",
            "Draws the pose sequence as an IMAGE batch (for Preview Image / Create Video).",
            inputs=[
                _comfy.Poses.Input("poses", tooltip="The pose sequence to draw."),
                io.Int.Input("width", default=768, min=8, max=4096, step=8, tooltip="Picture width."),
                io.Int.Input("height", default=768, min=8, max=4096, step=8, tooltip="Picture height."),
                io.Combo.Input("parts", options=cls.PARTS, default="hands (model input)",
                               tooltip="hands: exactly the pose image the sampler feeds the model."),
                _comfy.advanced(io.Int.Input("max_frames", default=0, min=0, max=100000,
                                             tooltip="Draw at most this many frames (0 = all).")),
            ],
            outputs=[io.Image.Output("images", display_name="images", tooltip="The drawn poses.")],
        )

    @classmethod
    @node_edge
    def execute(cls, poses, width, height, parts, max_frames) -> io.NodeOutput:
        from echomimic_core.pose import render_frames

        n = len(poses) if not max_frames else min(len(poses), int(max_frames))
        if n == 0:
            raise InputError("EchoMimicV2 Pose Preview: the pose sequence is empty")
        kwargs = {} if parts == cls.PARTS[0] else {"parts": _all_parts()}
        frames = render_frames(poses, range(n), int(height), int(width), **kwargs)
        return io.NodeOutput(_comfy.uint8_to_image(frames))


def _all_parts():
    from echomimic_core.pose import draw

    return getattr(draw, "ALL_PARTS")


NODES = [EchoMimicV2LoadPoses, EchoMimicV2ExtractPoses, EchoMimicV2AlignPoses, EchoMimicV2FitPoseLength,
         EchoMimicV2PosePreview]
NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _comfy.legacy_mappings(NODES)
