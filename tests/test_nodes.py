"""Each node's function without a server: the vendored ComfyUI's folder_paths / model_management /
comfy_api are imported (CPU) with their folders redirected to a temporary base holding the tiny test
models (official layout), and the pack is imported the way ComfyUI imports it."""

from __future__ import annotations

import ast
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from echomimic_core.errors import EchoMimicError
from support.paths import REPO
from support.comfy import (MEDIA, SAMPLER_ARGS, audio_dict, comfy_dirs, image_tensor, load_nodes,  # noqa: F401
                           load_pack, node_module, node_package, nodes, run)

CUSTOM_TYPES = {"ECHOMIMIC_MODELS", "ECHOMIMIC_AUDIO_FEATURES", "ECHOMIMIC_POSES", "ECHOMIMIC_CONTEXT",
                "ECHOMIMIC_SAMPLER_PRESET"}
CORE_TYPES = {"IMAGE", "AUDIO", "VIDEO", "INT", "FLOAT", "STRING", "BOOLEAN"}
EXPECTED_NODES = {
    "EchoMimicV2ModelLoader", "EchoMimicV2AudioEncoder", "EchoMimicV2LoadPoses", "EchoMimicV2ExtractPoses",
    "EchoMimicV2AlignPoses", "EchoMimicV2FitPoseLength", "EchoMimicV2PosePreview", "EchoMimicV2Sampler",
    "EchoMimicV2SampleToFile", "EchoMimicV2VideoCombine", "EchoMimicV2DemoInputs",
}
NEW_NODES = {"EchoMimicV2ContextOptions", "EchoMimicV2SamplerPreset",
             "EchoMimicV2GesturesFromAudio", "EchoMimicV2PoseLibrary",  # gesture.py (issue 15)
             "EchoMimicV2LoRA"}  # lora.py (issue 16)




# ------------------------------------------------------------------ registration and conventions
def test_every_node_is_registered_through_the_v3_entrypoint(comfy_dirs):
    import asyncio

    from comfy_api.latest import ComfyExtension, io

    pack = load_pack()
    # V3 only: ComfyUI prefers NODE_CLASS_MAPPINGS when a pack has both, so the root must not export it
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS") and callable(pack.comfy_entrypoint)
    ext = asyncio.run(pack.comfy_entrypoint())
    assert isinstance(ext, ComfyExtension)
    classes = asyncio.run(ext.get_node_list())
    assert all(issubclass(c, io.ComfyNode) for c in classes)
    ids = [c.define_schema().node_id for c in classes]
    assert set(ids) == EXPECTED_NODES | NEW_NODES and len(ids) == len(set(ids))
    assert classes == node_package().NODES


def test_node_families_are_one_list(comfy_dirs):
    pkg = node_package()
    assert [c for m in pkg.NODE_MODULES for c in m.NODES] == pkg.NODES
    for module in pkg.NODE_MODULES:  # the convention new families follow (gesture.py, lora.py)
        assert set(module.NODE_CLASS_MAPPINGS) == {c.define_schema().node_id for c in module.NODES}


@pytest.mark.parametrize("name", sorted(EXPECTED_NODES | NEW_NODES))
def test_node_declaration(comfy_dirs, name):
    from comfy_api.latest import io

    cls = nodes()[name]
    assert issubclass(cls, io.ComfyNode)
    schema = cls.GET_SCHEMA()
    assert schema.node_id == name and name.startswith("EchoMimicV2") and schema.category == "EchoMimicV2"
    assert schema.description and schema.display_name.startswith("EchoMimicV2")
    assert io.Hidden.unique_id in schema.hidden  # the progress bar names its node
    info = cls.GET_NODE_INFO_V1()
    for section in ("required", "optional"):
        for key, (kind, opts) in info["input"].get(section, {}).items():
            assert kind in CORE_TYPES | CUSTOM_TYPES | {"COMBO"}, (key, kind)
            assert opts.get("tooltip"), f"{name}.{key} has no tooltip"
    assert set(info["output"]) <= CORE_TYPES | CUSTOM_TYPES
    assert all(info["output_tooltips"]), name


@pytest.mark.slow
def test_only_nodes_and_root_init_import_comfyui():
    comfy_modules = {"folder_paths", "comfy", "comfy_api", "comfy_execution", "comfy_extras", "server",
                     "execution", "node_helpers", "latent_preview"}
    offenders = []
    for root in ("echomimic_core", "train"):
        for path in (REPO / root).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for n in names:
                    if n.split(".")[0] in comfy_modules:
                        offenders.append(f"{path.relative_to(REPO)}: {n}")
    assert not offenders


def test_model_folders_are_registered_with_folder_paths(comfy_dirs):
    fp = comfy_dirs["folder_paths"]
    paths = fp.get_folder_paths("echomimic_v2")
    assert os.path.join(fp.models_dir, "echomimic_v2") in paths
    assert str(comfy_dirs["models"] / "echomimic_v2") in paths
    assert os.path.join(fp.models_dir, "echo_mimic") in fp.get_folder_paths("echo_mimic")


# ------------------------------------------------------------------ model loader
def test_model_folder_list_and_resolution(comfy_dirs, tmp_path):
    loader = node_module("loader")
    listed = loader.list_model_folders()
    assert "echomimic_v2" in listed and "echomimic_v2/broken" in listed
    assert loader.resolve_model_folder("echomimic_v2/broken") == str(comfy_dirs["models"] / "echomimic_v2" / "broken")
    with pytest.raises(ValueError, match="outside"):
        loader.resolve_model_folder("echomimic_v2/../../etc")
    from echomimic_core.errors import ModelFilesNotFoundError

    with pytest.raises(ModelFilesNotFoundError, match="models/echomimic_v2"):
        loader.resolve_model_folder("echomimic_v2/nothing_here")


def test_model_folder_list_finds_the_older_packs_layout(comfy_dirs, tmp_path):
    fp = comfy_dirs["folder_paths"]
    legacy = tmp_path / "echo_mimic"
    (legacy / "v2").mkdir(parents=True)
    (legacy / "v2" / "reference_unet.pth").write_bytes(b"")
    fp.add_model_folder_path("echo_mimic", str(legacy))
    try:
        assert "echo_mimic" in node_module("loader").list_model_folders()
    finally:
        fp.folder_names_and_paths["echo_mimic"][0].remove(str(legacy))


def test_missing_model_file_gives_a_clear_error(comfy_dirs):
    with pytest.raises(EchoMimicError) as err:
        run("EchoMimicV2ModelLoader", "echomimic_v2/broken", "normal", "auto", "auto", "keep_loaded")
    assert "denoising_unet" in str(err.value)


def test_acc_variant_without_acc_files_names_them(comfy_dirs):
    with pytest.raises(EchoMimicError) as err:
        run("EchoMimicV2ModelLoader", "echomimic_v2/broken", "acc", "fp32", "cpu", "keep_loaded")
    assert "_acc" in str(err.value)


@pytest.fixture(scope="module")
def models(comfy_dirs):
    (handle,) = run("EchoMimicV2ModelLoader", "echomimic_v2", "normal", "auto", "auto", "keep_loaded")
    return handle


@pytest.mark.slow
def test_loader_hands_the_networks_to_comfyui_model_management(models):
    import comfy.model_management as mm

    assert models.dtype == torch.float32 and models.device.type == "cpu"  # auto on a CPU ComfyUI
    assert models.variant == "normal"
    assert type(models.patcher).__name__.endswith("ModelPatcher")
    assert models.patcher.load_device == mm.get_torch_device() and models.patcher.offload_device == mm.unet_offload_device()
    nets = set(map(id, models.models.networks().values()))
    assert {id(m) for m in models.patcher.model.values()} == nets
    assert models.patcher.model_size() == sum(mm.module_size(m) for m in models.models.networks().values())


@pytest.mark.slow
def test_loader_has_no_cache_of_its_own(comfy_dirs, models):
    # ComfyUI's node cache keeps the output between runs; a second execute loads a second set
    (again,) = run("EchoMimicV2ModelLoader", "echomimic_v2", "normal", "auto", "auto", "keep_loaded")
    assert again is not models and again.patcher is not models.patcher
    loader = nodes()["EchoMimicV2ModelLoader"]
    fp = loader.fingerprint_inputs("echomimic_v2", "normal", "auto", "auto", "keep_loaded")
    assert fp == loader.fingerprint_inputs("echomimic_v2", "normal", "auto", "auto", "keep_loaded")


def test_loader_cheap_checks(comfy_dirs):
    loader = nodes()["EchoMimicV2ModelLoader"]
    assert loader.validate_inputs("echomimic_v2", "normal") is True
    assert "no acc variant" in loader.validate_inputs("(embedded demo)", "acc")
    with pytest.raises(EchoMimicError, match="no acc variant"):
        run("EchoMimicV2ModelLoader", "(embedded demo)", "acc", "auto", "auto", "keep_loaded")


def test_loader_offers_the_safetensors_conversion(comfy_dirs):
    loader = node_module("loader")
    folder = str(comfy_dirs["models"] / "echomimic_v2")
    assert "reference_unet.pth" in loader.pickle_weights(folder)
    assert "python -m echomimic_core.convert" in loader.conversion_hint(folder)


# ------------------------------------------------------------------ audio
@pytest.fixture(scope="module")
def features(models):
    return run("EchoMimicV2AudioEncoder", models, audio_dict(), 24.0)


@pytest.mark.slow
def test_audio_encoder_counts_frames_at_fps(models, features):
    feats, frames, fps = features
    assert frames == 72 and fps == 24.0  # 3.000 s at 24 fps
    assert feats.chunks.shape[0] >= frames and feats.chunks.shape[-1] == 384
    _, frames25, _ = run("EchoMimicV2AudioEncoder", models, audio_dict(seconds=2.0), 25.0)
    assert frames25 == 50


def test_audio_encoder_takes_stereo_44k_like_load_audio(models):
    audio = audio_dict("speech_en_3s_44k_stereo.mp3")
    assert audio["waveform"].shape[1] == 2 and audio["sample_rate"] == 44100
    _, frames, _ = run("EchoMimicV2AudioEncoder", models, audio, 24.0)
    assert frames in (72, 73)


def test_audio_encoder_rejects_empty_audio(models):
    with pytest.raises(EchoMimicError, match="^EchoMimicV2 Audio Encoder: the audio is empty"):
        run("EchoMimicV2AudioEncoder", models, {"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}, 24.0)


# ------------------------------------------------------------------ poses
def test_load_poses_from_the_input_folder(comfy_dirs):
    node = nodes()["EchoMimicV2LoadPoses"]
    assert "echomimic_poses/01" in node.INPUT_TYPES()["required"]["pose_source"][1]["options"]
    seq, n = node.execute("echomimic_poses/01", 24.0).args
    assert n == 48 == len(seq)
    assert node.fingerprint_inputs("echomimic_poses/01", 24.0) == node.fingerprint_inputs("echomimic_poses/01", 24.0)
    inside = comfy_dirs["input"] / "echomimic_poses" / "01"
    seq2, n2 = node.execute("ignored", 25.0, path=str(inside)).args
    assert n2 == 48 and seq2.fps == 25.0
    with pytest.raises(EchoMimicError, match="echomimic_poses"):
        node.execute("echomimic_poses/missing", 24.0)
    with pytest.raises(EchoMimicError, match="inside ComfyUI's input folder"):
        node.execute("../../etc", 24.0)


def test_load_poses_path_is_confined_to_the_input_folder(comfy_dirs, monkeypatch, tmp_path):
    """An untrusted workflow can neither read nor probe paths outside input/ (symlinks resolved); the
    server's owner may opt in to other paths."""
    node = nodes()["EchoMimicV2LoadPoses"]
    outside = MEDIA / "pose" / "fight"
    monkeypatch.delenv("ECHOMIMIC_ALLOW_POSE_PATHS", raising=False)
    for path in (str(outside), str(tmp_path / "does_not_exist")):  # same answer whether it exists or not
        with pytest.raises(EchoMimicError, match="inside ComfyUI's input folder") as info:
            node.execute("ignored", 24.0, path=path)
        assert "does not exist" not in str(info.value)
    link = comfy_dirs["input"] / "echomimic_poses" / "escape"
    link.symlink_to(outside, target_is_directory=True)
    try:
        with pytest.raises(EchoMimicError, match="symlinks are resolved"):
            node.execute("echomimic_poses/escape", 24.0)
        monkeypatch.setenv("ECHOMIMIC_ALLOW_POSE_PATHS", "1")
        assert node.execute("ignored", 24.0, path=str(outside)).args[1] == 48
    finally:
        link.unlink()


def test_load_poses_reads_our_file_format(comfy_dirs):
    from echomimic_core.pose import load_pose_sequence, save_pose_sequence

    seq = load_pose_sequence(MEDIA / "pose" / "01")
    save_pose_sequence(seq, comfy_dirs["input"] / "echomimic_poses" / "mine.npz")
    node = nodes()["EchoMimicV2LoadPoses"]
    assert "echomimic_poses/mine.npz" in node.INPUT_TYPES()["required"]["pose_source"][1]["options"]
    _, n = node.execute("echomimic_poses/mine.npz", 24.0).args
    assert n == 48


@pytest.mark.parametrize("policy, first", [("loop", [0, 1, 2]), ("pingpong", [0, 1, 2]), ("hold", [0, 1, 2])])
def test_fit_pose_length(comfy_dirs, policy, first):
    seq, _ = run("EchoMimicV2LoadPoses", "echomimic_poses/01", 24.0)
    fitted, n = run("EchoMimicV2FitPoseLength", seq, 100, policy)
    assert n == 100 == len(fitted)
    short, n = run("EchoMimicV2FitPoseLength", seq, 10, policy)
    assert n == 10
    same, n = run("EchoMimicV2FitPoseLength", seq, 0, policy)
    assert same is seq and n == 48


def test_fit_pose_length_trim_refuses_to_lengthen(comfy_dirs):
    seq, _ = run("EchoMimicV2LoadPoses", "echomimic_poses/01", 24.0)
    with pytest.raises(EchoMimicError, match="trim") as err:
        run("EchoMimicV2FitPoseLength", seq, 100, "trim")
    assert err.value.cause == "InputError"


@pytest.mark.slow
def test_pose_preview_draws_the_model_input(comfy_dirs):
    from echomimic_core.pose import render_frames

    seq, _ = run("EchoMimicV2LoadPoses", "echomimic_poses/01", 24.0)
    (images,) = run("EchoMimicV2PosePreview", seq, 96, 64, "hands (model input)", 5)
    assert images.shape == (5, 64, 96, 3) and images.dtype == torch.float32
    expected = render_frames(seq, range(5), 64, 96)
    assert np.array_equal((images.numpy() * 255).round().astype(np.uint8), expected)
    (full,) = run("EchoMimicV2PosePreview", seq, 64, 64, "body+hands+face", 0)
    assert full.shape[0] == 48 and full.sum() > images[:1].sum()


@pytest.mark.slow
def test_extract_and_align_poses_with_mediapipe(comfy_dirs):
    pytest.importorskip("mediapipe")
    frames = torch.cat([image_tensor("echomimicv2_demo_0014.png", 256), image_tensor("echomimicv2_demo_0047.png", 256)])
    seq, n = run("EchoMimicV2ExtractPoses", frames, "mediapipe", 24.0)
    assert n == 2 and seq.fps == 24.0
    assert (np.asarray(seq[0]["hands"]) > 0).any()
    ref = image_tensor("echomimicv2_demo_0035.png", 384)
    aligned, out_ref = run("EchoMimicV2AlignPoses", seq, ref, "mediapipe", "align_poses")
    assert len(aligned) == 2 and out_ref.shape == (1, 384, 384, 3)
    cropped, crop_ref = run("EchoMimicV2AlignPoses", seq, ref, "mediapipe", "crop_reference_and_align")
    assert len(cropped) == 2 and crop_ref.shape == (1, 768, 768, 3)


def test_extract_poses_resamples_the_motion_in_time(comfy_dirs):
    resample = node_module("pose").resample_indices
    assert resample(10, 24.0, 24.0) == list(range(10)) == resample(10, 30.0, 0.0)
    assert resample(60, 60.0, 24.0) == [int(k * 2.5) for k in range(24)]  # 1 s at 60 fps -> 24 frames
    assert resample(30, 30.0, 24.0) == [int(k * 1.25) for k in range(24)]
    assert resample(12, 12.0, 24.0) == [k // 2 for k in range(24)]      # slower source: frames repeat


def test_dwpose_without_onnx_files_names_them(comfy_dirs):
    with pytest.raises(EchoMimicError, match="yolox_l.onnx") as err:
        run("EchoMimicV2ExtractPoses", image_tensor(size=64), "dwpose", 24.0)
    assert err.value.cause == "ModelFilesNotFoundError"  # converted at the node edge


# ------------------------------------------------------------------ video combine
def test_video_combine_makes_a_core_video_with_audio_cut_to_length(comfy_dirs, tmp_path):
    from comfy_api.input import VideoInput

    frames = torch.rand(10, 32, 48, 3)
    audio = audio_dict()
    (video,) = run("EchoMimicV2VideoCombine", frames, 24.0, audio)
    assert isinstance(video, VideoInput)
    comp = video.get_components()
    assert comp.images.shape == (10, 32, 48, 3)
    assert comp.frame_rate == Fraction(24)
    assert comp.audio["sample_rate"] == 16000
    assert comp.audio["waveform"].shape == (1, 1, round(10 * 16000 / 24))
    assert torch.equal(comp.audio["waveform"], audio["waveform"][..., : round(10 * 16000 / 24)])
    assert video.get_dimensions() == (48, 32)
    out = tmp_path / "v.mp4"
    video.save_to(str(out))
    import av

    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.audio


def test_video_combine_pads_short_audio_and_works_without(comfy_dirs):
    short = {"waveform": torch.ones(1, 2, 100), "sample_rate": 8000}
    (video,) = run("EchoMimicV2VideoCombine", torch.rand(24, 16, 16, 3), 24.0, short)
    wf = video.get_components().audio["waveform"]
    assert wf.shape == (1, 2, 8000) and wf[..., 100:].abs().sum() == 0
    (silent,) = run("EchoMimicV2VideoCombine", torch.rand(3, 16, 16, 3), 12.5)
    assert silent.get_components().audio is None
    assert silent.get_components().frame_rate == Fraction(25, 2)


# ------------------------------------------------------------------ sampler (tiny model, CPU)


@pytest.fixture(scope="module")
def poses(comfy_dirs, features):
    seq, _ = run("EchoMimicV2LoadPoses", "echomimic_poses/01", 24.0)
    return run("EchoMimicV2FitPoseLength", seq, features[1], "loop")[0]


@pytest.fixture()
def progress_calls():
    import comfy.utils

    calls = []
    old = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    yield calls
    comfy.utils.set_progress_bar_global_hook(old)


@pytest.mark.slow
def test_sampler_returns_an_image_batch_and_reports_progress(models, features, poses, progress_calls):
    images, fps, count = run("EchoMimicV2Sampler", models, image_tensor(size=128), features[0], poses,
                                                                  **SAMPLER_ARGS)
    assert images.shape == (16, 64, 64, 3) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0 and float(images.std()) > 0
    assert fps == 24.0 and count == 16
    values = [v for v, _ in progress_calls]
    assert values == sorted(values) and progress_calls[-1][0] == progress_calls[-1][1] > 2


@pytest.mark.slow
def test_sampler_honours_comfyui_interrupt(models, features, poses):
    import comfy.model_management as mm

    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run("EchoMimicV2Sampler", models, image_tensor(size=64), features[0], poses, **SAMPLER_ARGS)
        assert not mm.processing_interrupted()  # the flag is consumed, the next run is not affected
    finally:
        mm.interrupt_current_processing(False)


def test_sampler_rejects_bad_context(models, features, poses):
    with pytest.raises(EchoMimicError, match="context_overlap"):
        run("EchoMimicV2Sampler", models, image_tensor(size=64), features[0], poses,
                                               **{**SAMPLER_ARGS, "context_overlap": 12})


@pytest.mark.slow
def test_sample_to_file_streams_an_atomic_mp4(comfy_dirs, models, features, poses):
    from echomimic_core.video import probe

    out = nodes()["EchoMimicV2SampleToFile"].execute(models, image_tensor(size=64), features[0], poses,
                                                     **{**SAMPLER_ARGS, "length": 12},
                                                     filename_prefix="unit/EchoMimicV2", crf=23, audio=audio_dict())
    item = out.ui.as_dict()["images"][0]
    path = comfy_dirs["output"] / item["subfolder"] / item["filename"]
    assert item["type"] == "output" and path.is_file() and out.args[1] == str(path)
    facts = probe(path)
    assert facts["video"]["width"] == 64 and facts["audio"]["codec"] == "aac"
    assert facts["audio"]["duration"] == pytest.approx(12 / 24, abs=0.08)
    w, h = out.args[0].get_dimensions()
    assert (w, h) == (64, 64)


def test_interrupted_sample_to_file_leaves_no_file(comfy_dirs, models, features, poses):
    import comfy.model_management as mm
    import comfy.utils

    before = set(Path(comfy_dirs["output"]).rglob("*"))
    old = comfy.utils.PROGRESS_BAR_HOOK
    # press "cancel" as soon as the first window is done
    comfy.utils.set_progress_bar_global_hook(lambda *a, **k: mm.interrupt_current_processing(True))
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run("EchoMimicV2SampleToFile", models, image_tensor(size=64), features[0], poses,
                                                        **SAMPLER_ARGS, filename_prefix="unit/cancelled", crf=23,
                                                        audio=audio_dict())
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
        mm.interrupt_current_processing(False)
    assert set(Path(comfy_dirs["output"]).rglob("*")) - before <= {comfy_dirs["output"] / "unit"}


@pytest.mark.slow
def test_offload_after_run_hands_the_weights_back(comfy_dirs):
    import comfy.model_management as mm

    (handle,) = run("EchoMimicV2ModelLoader", "echomimic_v2", "normal", "fp32", "cpu", "offload_after_run")
    assert handle.offload
    handle.to_compute()
    assert any(lm.model is handle.patcher for lm in mm.current_loaded_models)
    handle.after_run()
    assert not any(lm.model is handle.patcher for lm in mm.current_loaded_models)


@pytest.mark.slow
def test_loader_reads_the_older_packs_echo_mimic_layout(comfy_dirs, tmp_path):
    """models/echo_mimic/{unet/, audio_processor/whisper_tiny.pt, v2/*.pth} + models/vae/sd-vae-ft-mse/."""
    import shutil

    from support.comfy import WEIGHTS

    fp = comfy_dirs["folder_paths"]
    root = tmp_path / "models" / "echo_mimic"
    (root / "v2").mkdir(parents=True)
    for name in ("reference_unet", "denoising_unet", "motion_module", "pose_encoder"):
        shutil.copy(WEIGHTS / f"{name}.pth", root / "v2" / f"{name}.pth")
    shutil.copytree(WEIGHTS / "sd-image-variations-diffusers" / "unet", root / "unet")
    (root / "audio_processor").mkdir()
    shutil.copy(WEIGHTS / "audio_processor" / "tiny.pt", root / "audio_processor" / "whisper_tiny.pt")
    shutil.copytree(WEIGHTS / "sd-vae-ft-mse", tmp_path / "models" / "vae" / "sd-vae-ft-mse")
    shutil.copy(WEIGHTS / "inference_config.json", root / "v2" / "inference_config.json")
    fp.add_model_folder_path("echo_mimic", str(root))
    try:
        assert "echo_mimic" in node_module("loader").list_model_folders()
        (handle,) = run("EchoMimicV2ModelLoader", "echo_mimic", "normal", "fp32", "cpu", "keep_loaded")
        _, frames, _ = run("EchoMimicV2AudioEncoder", handle, audio_dict(seconds=1.0), 24.0)
        assert frames == 24
    finally:
        fp.folder_names_and_paths["echo_mimic"][0].remove(str(root))


def test_fast_preset_is_the_library_fast_options():
    """The node's "fast" preset carries the library's measured fast options into the run settings."""
    from echomimic_core.settings import FAST_OPTIONS, FAST_SAMPLER

    module = node_module("sampler")
    preset = module.preset_values("fast")
    assert (preset.steps, preset.scheduler) == (FAST_SAMPLER["steps"], FAST_SAMPLER["scheduler"])
    run_settings = module.settings(0, 20, 2.5, 12, 3, 64, 64, 0, preset=preset)
    assert run_settings["context_schedule"] == FAST_OPTIONS["context_schedule"]
    assert run_settings["deep_cache_interval"] == FAST_OPTIONS["deep_cache_interval"]
