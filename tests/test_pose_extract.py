"""Pose extraction: DWPose (onnxruntime) with stand-in onnx graphs, missing files, mediapipe on real images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from echomimic_core.errors import ModelFilesNotFoundError
from echomimic_core.pose import DWPoseExtractor, draw_hands, find_dwpose_files, normalize_frame


# --------------------------------------------------------------------------- stand-in models
IMG_H, IMG_W = 480, 320
BOX = (80.0, 60.0, 240.0, 420.0)       # main person, image pixels
BOX2 = (250.0, 100.0, 310.0, 200.0)    # a second, weaker person
POSE_H, POSE_W = 256, 192              # deliberately not 384x288: must be read from the onnx input


def _const_model(inp_name: str, inp_shape, outputs: dict[str, np.ndarray]):
    """outputs[k] = const_k + 0 * mean(input): runs on any input of that shape (onnx helper API)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("ReduceMean", [inp_name], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"])]
    inits = [numpy_helper.from_array(np.zeros(1, np.float32), "zero")]
    outs = []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_c"))
        nodes.append(helper.make_node("Add", [f"{name}_c", "z"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "standin", [helper.make_tensor_value_info(inp_name, TensorProto.FLOAT, inp_shape)],
                              outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _raw_for_box(box, r, stride, gx, gy):
    x1, y1, x2, y2 = (v * r for v in box)
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    return [cx / stride - gx, cy / stride - gy, np.log(w / stride), np.log(h / stride)]


def _detector_output() -> np.ndarray:
    out = np.zeros((1, 8400, 85), np.float32)
    r = min(640 / IMG_H, 640 / IMG_W)
    base32 = 80 * 80 + 40 * 40
    # main person: stride-32 cell (6, 10); objectness 0.95 x class 0.95
    a = base32 + 10 * 20 + 6
    out[0, a, :4] = _raw_for_box(BOX, r, 32, 6, 10)
    out[0, a, 4], out[0, a, 5] = 0.95, 0.95
    # near-duplicate of the main box with a lower score: removed by NMS
    b = base32 + 10 * 20 + 7
    out[0, b, :4] = _raw_for_box((84, 62, 242, 418), r, 32, 7, 10)
    out[0, b, 4], out[0, b, 5] = 0.9, 0.9
    # a class-1 object: never a person
    c = 80 * 80 + 5 * 40 + 5
    out[0, c, :4] = _raw_for_box((10, 10, 60, 60), r, 16, 5, 5)
    out[0, c, 4], out[0, c, 6] = 0.99, 0.99
    # a second person with score 0.6 * 0.6 = 0.36 > 0.3: kept
    d = 30 * 80 + 60
    out[0, d, :4] = _raw_for_box(BOX2, r, 8, 60, 30)
    out[0, d, 4], out[0, d, 5] = 0.6, 0.6
    # a person scoring 0.5 * 0.5 = 0.25: passes NMS's 0.1 but not the 0.3 person threshold
    e = 70 * 80 + 10
    out[0, e, :4] = _raw_for_box((5, 400, 60, 470), r, 8, 10, 70)
    out[0, e, 4], out[0, e, 5] = 0.5, 0.5
    return out


def _pose_outputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    K, Wx, Wy = 133, POSE_W * 2, POSE_H * 2
    sx = rng.uniform(-0.3, 0.2, (1, K, Wx))
    sy = rng.uniform(-0.3, 0.2, (1, K, Wy))
    loc_x = rng.integers(0, Wx, K)
    loc_y = rng.integers(0, Wy, K)
    vx = rng.uniform(0.5, 1.1, K)
    vy = rng.uniform(0.5, 1.1, K)
    sx[0, np.arange(K), loc_x] = vx
    sy[0, np.arange(K), loc_y] = vy
    # keypoint 120 (a right-hand point) has no positive response: score <= 0
    sx[0, 120] = -0.5
    sy[0, 120] = -0.5
    score = np.minimum(sx.max(-1), sy.max(-1))[0].astype(np.float32).astype(np.float64)
    return sx, sy, loc_x, loc_y, score


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory) -> Path:
    onnx = pytest.importorskip("onnx")
    d = tmp_path_factory.mktemp("models") / "echomimic_v2" / "dwpose"
    d.mkdir(parents=True)
    onnx.save(_const_model("images", [1, 3, 640, 640], {"output": _detector_output()}), d / "yolox_l.onnx")
    sx, sy, *_ = _pose_outputs()
    onnx.save(_const_model("input", [1, 3, POSE_H, POSE_W], {"simcc_x": sx, "simcc_y": sy}),
              d / "dw-ll_ucoco_384.onnx")
    return d


def _expected_coco(box):
    """Image coordinates of the 133 stand-in keypoints for a detection box (RTMPose top-down maths)."""
    _, _, loc_x, loc_y, score = _pose_outputs()
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = (x2 - x1) * 1.25, (y2 - y1) * 1.25
    aspect = POSE_W / POSE_H
    w, h = (w, w / aspect) if w > h * aspect else (h * aspect, h)
    lx = np.where(score > 0, loc_x, -1) / 2.0
    ly = np.where(score > 0, loc_y, -1) / 2.0
    x = lx / POSE_W * w + cx - w / 2
    y = ly / POSE_H * h + cy - h / 2
    return np.stack([x, y], -1), score


OPENPOSE_FROM_COCO = {0: 0, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16, 11: 11, 12: 13, 13: 15,
                      14: 2, 15: 1, 16: 4, 17: 3}


def test_dwpose_standin_full_path(standin_dir: Path):
    ext = DWPoseExtractor(models_root=standin_dir.parent.parent)
    assert ext.pose_hw == (POSE_H, POSE_W) and ext.det_size == (640, 640)
    img = np.random.default_rng(1).integers(0, 255, (IMG_H, IMG_W, 3), dtype=np.uint8)
    boxes = ext.detect(img)
    assert boxes.shape == (2, 4)
    np.testing.assert_allclose(boxes[0], BOX, atol=1e-3)
    np.testing.assert_allclose(boxes[1], BOX2, atol=1e-3)
    frame = ext(img)
    normalize_frame(frame)  # valid official layout
    n = 2
    assert frame["bodies"]["candidate"].shape == (n * 18, 2) and frame["bodies"]["subset"].shape == (n, 18)
    assert frame["hands"].shape == (2 * n, 21, 2) and frame["faces"].shape == (n, 68, 2)
    scale = np.array([IMG_W, IMG_H], float)
    for p, box in enumerate((BOX, BOX2)):
        xy, sc = _expected_coco(box)
        xy = xy / scale
        body = frame["bodies"]["candidate"][p * 18:(p + 1) * 18]
        for op, coco in OPENPOSE_FROM_COCO.items():
            np.testing.assert_allclose(body[op], xy[coco], atol=1e-4)
            assert frame["bodies"]["score"][p, op] == pytest.approx(sc[coco], abs=1e-6)
        np.testing.assert_allclose(body[1], (xy[5] + xy[6]) / 2, atol=1e-4)
        assert frame["bodies"]["score"][p, 1] == float(sc[5] > 0.3 and sc[6] > 0.3)
        subset = frame["bodies"]["subset"][p]
        assert all((subset[j] == 18 * p + j) == (frame["bodies"]["score"][p, j] > 0.3) for j in range(18))
        np.testing.assert_allclose(frame["faces"][p], xy[23:91], atol=1e-4)
        np.testing.assert_allclose(frame["faces_score"][p], sc[23:91], atol=1e-6)
        np.testing.assert_allclose(frame["hands"][p], xy[91:112], atol=1e-4)          # left hands first
        np.testing.assert_allclose(frame["hands"][n + p], xy[112:133], atol=1e-4)     # then right hands
        np.testing.assert_allclose(frame["hands_score"][n + p], sc[112:133], atol=1e-6)
    assert frame["hands_score"][2, 120 - 112] <= 0
    # the drawing path accepts the raw detection
    assert draw_hands(frame, 64, 64).shape == (64, 64, 3)


def test_dwpose_no_person_uses_whole_image(standin_dir: Path, tmp_path: Path):
    import onnx

    empty = tmp_path / "empty"
    empty.mkdir()
    onnx.save(_const_model("images", [1, 3, 640, 640], {"output": np.zeros((1, 8400, 85))}), empty / "yolox_l.onnx")
    (empty / "dw-ll_ucoco_384.onnx").write_bytes((standin_dir / "dw-ll_ucoco_384.onnx").read_bytes())
    ext = DWPoseExtractor(empty)
    img = np.zeros((IMG_H, IMG_W, 3), np.uint8)
    assert ext.detect(img).shape == (0, 4)
    frame = ext(img)
    xy, _ = _expected_coco((0, 0, IMG_W, IMG_H))
    np.testing.assert_allclose(frame["faces"][0], xy[23:91] / [IMG_W, IMG_H], atol=1e-4)


def test_letterbox_and_warp():
    from echomimic_core.pose.dwpose import letterbox, warp_matrix

    img = np.full((480, 320, 3), 7, np.uint8)
    x, r = letterbox(img, (640, 640))
    assert x.shape == (3, 640, 640) and x.dtype == np.float32 and r == pytest.approx(4 / 3)
    assert (x[:, :640, :426] == 7).all() and (x[:, :, 427:] == 114).all()
    m = warp_matrix(np.array([100.0, 200.0]), np.array([150.0, 200.0]), 192, 256)
    corners = np.array([[25.0, 100.0, 1.0], [175.0, 300.0, 1.0]]) @ m.T
    np.testing.assert_allclose(corners, [[0, 0], [192, 256]], atol=1e-3)


def test_dwpose_missing_files(tmp_path: Path):
    with pytest.raises(ModelFilesNotFoundError) as err:
        DWPoseExtractor(models_root=tmp_path)
    msg = str(err.value)
    assert "yolox_l.onnx" in msg and "dw-ll_ucoco_384.onnx" in msg
    assert str(tmp_path / "echomimic_v2" / "dwpose") in msg and "huggingface.co/yzd-v/DWPose" in msg
    # only one of the two files present: still a clear error naming the folder's content
    (tmp_path / "dwpose").mkdir()
    (tmp_path / "dwpose" / "yolox_l.onnx").write_bytes(b"x")
    with pytest.raises(ModelFilesNotFoundError, match="dw-ll_ucoco_384.onnx"):
        find_dwpose_files(models_root=tmp_path)
    with pytest.raises(ModelFilesNotFoundError, match=str(tmp_path / "nowhere")):
        DWPoseExtractor(tmp_path / "nowhere")


# --------------------------------------------------------------------------- mediapipe on real images
DEMO = ["echomimicv2_demo_0014.png", "echomimicv2_demo_0035.png", "echomimicv2_demo_0047.png"]


@pytest.fixture(scope="module")
def mp_frames(media: Path):
    pytest.importorskip("mediapipe")
    from echomimic_core.pose import MediaPipeExtractor

    out = {}
    with MediaPipeExtractor() as ext:
        for name in DEMO + ["skimage_astronaut.png"]:
            img = cv2.cvtColor(cv2.imread(str(media / "ref_images" / name)), cv2.COLOR_BGR2RGB)
            out[name] = ext(img)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", DEMO)
def test_mediapipe_demo_images(mp_frames, name):
    f = normalize_frame(mp_frames[name])
    body, bs = f["bodies"]["candidate"], f["bodies"]["score"][0]
    # both hands found, inside the image, each near its own wrist (person's left first)
    assert f["hands"].shape == (2, 21, 2) and (f["hands_score"] == 1.0).all()
    assert ((f["hands"] > 0) & (f["hands"] < 1)).all()
    for slot, wrist in ((0, 7), (1, 4)):
        assert bs[wrist] > 0.5
        assert np.linalg.norm(f["hands"][slot, 0] - body[wrist]) < 0.08
    # the person's left hand is on the image right for these frontal portraits
    assert f["hands"][0, :, 0].mean() > f["hands"][1, :, 0].mean()
    # upper body visible and plausibly placed
    for j in (0, 1, 2, 5, 14, 15):
        assert bs[j] > 0.5 and f["bodies"]["subset"][0, j] == j
        assert 0.05 < body[j, 0] < 0.95 and 0.02 < body[j, 1] < 0.9
    assert body[0, 1] < body[1, 1]                 # nose above neck
    assert body[2, 0] < body[1, 0] < body[5, 0]    # R shoulder image-left of neck, L shoulder right
    np.testing.assert_allclose(body[1], (body[2] + body[5]) / 2)
    # face: 68 points around the nose, iBUG ordering
    face = f["faces"][0]
    assert (f["faces_score"] == 1.0).all()
    assert np.abs(face - body[0]).max() < 0.25
    assert face[0, 0] < face[8, 0] < face[16, 0]           # jaw left -> chin -> right
    assert face[8, 1] == face[:17, 1].max()                # chin lowest jaw point
    assert face[36, 0] < face[39, 0] < face[42, 0] < face[45, 0]
    assert face[27, 1] < face[30, 1] < face[51, 1] < face[57, 1] < face[8, 1]
    assert face[19, 1] < face[37, 1]                       # brow above eye


@pytest.mark.slow
def test_mediapipe_hands_out_of_frame(mp_frames):
    f = mp_frames["skimage_astronaut.png"]
    assert (f["hands_score"] == 0).all() and (f["hands"] == -1).all()
    assert not draw_hands(f, 64, 64).any()                 # nothing drawn for missing hands
    assert (f["faces_score"] == 1.0).all() and f["bodies"]["score"][0, 0] > 0.5


def test_mediapipe_reference_alignment(mp_frames, media: Path):
    """End to end: detect on a reference image, align a demo sequence to it, crop the reference."""
    from echomimic_core.pose import align_to_reference, crop_reference, frame_anchors, load_pose_sequence

    ref = mp_frames[DEMO[0]]
    seq = load_pose_sequence(media / "pose" / "01").select(range(4))
    out = align_to_reference(seq, ref, (1024, 1024), anchor=0)
    mid, top, bottom = frame_anchors(ref)
    a = frame_anchors(out[0])
    assert abs(a[0] - mid) * 1024 <= 2 and abs(a[1] - top) * 1024 <= 2 and abs(a[2] - bottom) * 1024 <= 2
    img = cv2.cvtColor(cv2.imread(str(media / "ref_images" / DEMO[0])), cv2.COLOR_BGR2RGB)
    aligned, kp, params = crop_reference(img, ref)
    assert aligned.shape == (768, 768, 3) and abs(frame_anchors(kp)[0] - 0.5) < 0.01
