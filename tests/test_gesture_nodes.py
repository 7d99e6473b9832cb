"""Gesture nodes (V3): Gestures From Audio (audio and still modes) and Pose Library, run directly against the
vendored ComfyUI's comfy_api, with the embedded gesture model and the demo figure's features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.comfy import comfy_dirs, image_tensor, node_module  # noqa: F401

from support.paths import REPO

pytestmark = pytest.mark.usefixtures("one_thread")
DEMO = REPO / "echomimic_core" / "assets" / "demo"


class _Features:  # what EchoMimicV2 Audio Encoder outputs (AudioFeatures), with the demo encoder's token count
    def __init__(self, n=30):
        from echomimic_core.audio import load_waveform

        self.chunks = torch.randn(n + 2, 20, 384, generator=torch.Generator().manual_seed(0))
        self.num_frames = n
        self.fps = 24.0
        self.waveform = load_waveform(str(DEMO / "audio.wav"))[: int(n / 24 * 16000)]


@pytest.fixture(scope="module")
def gesture(comfy_dirs):  # noqa: F811
    return node_module("gesture")


@pytest.fixture(scope="module")
def ref_pose():
    from echomimic_core.pose import load_pose_sequence

    return load_pose_sequence(DEMO / "poses.npz")


def test_nodes_registered(gesture):
    assert set(gesture.NODE_CLASS_MAPPINGS) == {"EchoMimicV2GesturesFromAudio", "EchoMimicV2PoseLibrary"}
    assert gesture.NODE_DISPLAY_NAME_MAPPINGS["EchoMimicV2GesturesFromAudio"] == "EchoMimicV2 Gestures From Audio"


def test_gestures_from_audio_and_still(gesture, ref_pose):
    ref_img = image_tensor("echomimicv2_demo_0014.png", 64)
    node = gesture.EchoMimicV2GesturesFromAudio
    out = node.execute(_Features(), ref_img, "audio", 3, 1.0, "mediapipe", reference_pose=ref_pose)
    seq, n = out.result
    assert n == 30 and len(seq) == 30
    hands = np.stack([f["hands"] for f in seq.frames])
    assert np.ptp(hands, axis=0).max() > 0.01  # it moves
    still, _ = node.execute(_Features(), ref_img, "still", 0, 1.0, "mediapipe", reference_pose=ref_pose).result
    for f in still.frames:
        np.testing.assert_allclose(f["hands"], ref_pose[0]["hands"])


def test_pose_library_node(gesture, ref_pose, comfy_dirs, tmp_path):  # noqa: F811
    from echomimic_core.pose import save_pose_sequence

    lib = tmp_path / "lib"
    lib.mkdir()
    save_pose_sequence(ref_pose.select(range(0, 48)), lib / "a.npz")
    save_pose_sequence(ref_pose.select(range(48, 96)), lib / "b.npz")
    ref_img = image_tensor("echomimicv2_demo_0014.png", 64)
    seq, n = gesture.EchoMimicV2PoseLibrary.execute(_Features(70), ref_img, str(lib), 1, 0.01, "mediapipe",
                                                    reference_pose=ref_pose).result
    assert n == 70 and len(seq) == 70
