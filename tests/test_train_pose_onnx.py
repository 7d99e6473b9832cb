"""The DWPose keypoint-map pose loss: the ONNX → torch interpreter against onnxruntime (a tiny
RTMPose-shaped graph at four opsets and single-op graphs), gradients, build-time refusals, the
backend's crop, the keypoint-map comparison and one PhD training step with this backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echomimic_core.errors import CheckpointError, ConfigError, ModelFilesNotFoundError
from support.onnx_graphs import save, tiny_rtmpose

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from train.onnx_graph import OnnxGraph  # noqa: E402


def _session(model):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("opset", [11, 13, 17, 18])
def test_tiny_rtmpose_matches_onnxruntime_and_passes_gradients(opset):
    model = tiny_rtmpose(opset)
    x = np.random.default_rng(opset).standard_normal((2, 3, 32, 24)).astype(np.float32)
    ref = _session(model).run(None, {"input": x})
    graph = OnnxGraph(model)
    assert not list(graph.parameters())  # frozen: initializers are buffers
    assert graph.state_dict() == {}  # non-persistent: never written into a checkpoint
    inp = torch.from_numpy(x).requires_grad_(True)
    out = graph(inp)
    assert [o.shape for o in out] == [(2, 5, 48), (2, 5, 64)]
    for o, r in zip(out, ref):
        np.testing.assert_allclose(o.detach().numpy(), r, rtol=0, atol=1e-5)
    (out[0].pow(2).sum() + out[1].sum()).backward()
    assert torch.isfinite(inp.grad).all() and inp.grad.abs().sum() > 0


def _graph(nodes, feeds, consts=None, outputs=(("y", TensorProto.FLOAT),), opset=13):
    from onnx import numpy_helper

    kinds = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
             np.dtype(bool): TensorProto.BOOL}
    g = helper.make_graph(
        [helper.make_node(op, ins, outs, **attrs) for op, ins, outs, attrs in nodes], "case",
        [helper.make_tensor_value_info(k, kinds[v.dtype], v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), feeds


R = np.random.default_rng(0)
X4 = R.standard_normal((1, 2, 7, 8)).astype(np.float32)
X3 = R.standard_normal((2, 3, 4)).astype(np.float32)
I64 = np.int64
INT = TensorProto.INT64


def _one(op, ins=("x",), x=X4, consts=None, opset=13, out=TensorProto.FLOAT, **attrs):
    return _graph([(op, list(ins), ["y"], attrs)], {"x": x}, consts, (("y", out),), opset)


CASES = {
    "resize_nearest_asym_floor": _one("Resize", ("x", "", "", "s"), consts={"s": np.array([1, 2, 9, 4], I64)},
                                      mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    "resize_nearest_half_pixel": _one("Resize", ("x", "", "sc"), consts={"sc": np.array([1, 1, 2, 1.5], np.float32)},
                                      mode="nearest"),
    "resize_linear_align_corners": _one("Resize", ("x", "", "", "s"), consts={"s": np.array([1, 2, 9, 4], I64)},
                                        mode="linear", coordinate_transformation_mode="align_corners"),
    "resize_linear_pytorch_half_pixel_down": _one("Resize", ("x", "", "sc"), mode="linear",
                                                  consts={"sc": np.array([1, 1, 0.5, 2], np.float32)},
                                                  coordinate_transformation_mode="pytorch_half_pixel"),
    "resize_linear_asymmetric": _one("Resize", ("x", "", "sc"), consts={"sc": np.array([1, 1, 3, 2], np.float32)},
                                     mode="linear", coordinate_transformation_mode="asymmetric"),
    "pad_reflect": _one("Pad", ("x", "p"), consts={"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], I64)}, mode="reflect"),
    "pad_edge": _one("Pad", ("x", "p"), consts={"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], I64)}, mode="edge"),
    "pad_constant_negative": _one("Pad", ("x", "p", "v"), consts={"p": np.array([0, 0, 1, -2, 0, 0, -1, 3], I64),
                                                                  "v": np.float32(0.5)}),
    "slice_negative_step": _one("Slice", ("x", "a", "b", "ax", "st"),
                                consts={"a": np.array([-1, 1], I64), "b": np.array([-2 ** 62, 100], I64),
                                        "ax": np.array([3, 2], I64), "st": np.array([-2, 2], I64)}),
    "gather_negative": _one("Gather", ("x", "i"), x=X3, consts={"i": np.array([[-1, 0], [1, -2]], I64)}, axis=1),
    "gather_scalar": _one("Gather", ("x", "i"), x=X3, consts={"i": np.array(-1, I64)}, axis=2),
    "expand": _one("Expand", ("x", "s"), x=X3[:, :, :1], consts={"s": np.array([2, 1, 1, 4], I64)}),
    "tile": _one("Tile", ("x", "r"), x=X3, consts={"r": np.array([2, 1, 3], I64)}),
    "conv_same_upper_stride2": _one("Conv", ("x", "w", "b"), consts={"w": R.standard_normal((3, 2, 3, 3)).astype(np.float32),
                                                                     "b": np.ones(3, np.float32)},
                                    auto_pad="SAME_UPPER", strides=[2, 2]),
    "conv_asymmetric_dilated": _one("Conv", ("x", "w"), consts={"w": R.standard_normal((2, 1, 3, 2)).astype(np.float32)},
                                    pads=[0, 1, 2, 1], dilations=[2, 1], group=2),
    "avgpool_asym_exclude_pad": _one("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0]),
    "avgpool_include_pad_ceil": _one("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                     count_include_pad=1, ceil_mode=1),
    "maxpool_ceil": _one("MaxPool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    "maxpool_dilated": _one("MaxPool", kernel_shape=[2, 3], dilations=[2, 1], pads=[1, 1, 0, 1]),
    "maxpool_same_lower": _one("MaxPool", kernel_shape=[2, 3], auto_pad="SAME_LOWER"),
    "global_max_pool": _one("GlobalMaxPool"),
    "reduce_prod_attr": _one("ReduceProd", axes=[1, 2], keepdims=0),
    "reduce_max_input_axes": _one("ReduceMax", ("x", "a"), consts={"a": np.array([-1], I64)}, opset=18),
    "reduce_mean_all": _one("ReduceMean", keepdims=0),
    "reduce_logsumexp": _one("ReduceLogSumExp", axes=[2]),
    "reduce_sum_square": _one("ReduceSumSquare", axes=[0, 3], keepdims=0),
    "reduce_l1": _one("ReduceL1", axes=[1]),
    "argmax_last": _one("ArgMax", x=np.array([[1, 3, 3], [2, 2, 0]], np.float32), out=INT, axis=1, keepdims=0,
                        select_last_index=1),
    "einsum": _graph([("Einsum", ["x", "w"], ["y"], {"equation": "bij,jk->bik"})], {"x": X3},
                     {"w": R.standard_normal((4, 5)).astype(np.float32)}, opset=13),
    "instance_norm": _one("InstanceNormalization", ("x", "s", "b"),
                          consts={"s": np.array([1.5, 0.5], np.float32), "b": np.array([0.1, -0.2], np.float32)}),
    "layer_norm_axis1": _one("LayerNormalization", ("x", "s"), x=X3, consts={"s": R.standard_normal((3, 4)).astype(np.float32)},
                             axis=1, opset=17),
    "gelu_tanh": _one("Gelu", opset=20, approximate="tanh"),
    "hard_swish": _one("HardSwish", opset=14), "mish": _one("Mish", opset=18), "softplus": _one("Softplus"),
    "elu": _one("Elu", alpha=0.7), "leaky_relu": _one("LeakyRelu", alpha=0.2),
    "prelu": _one("PRelu", ("x", "s"), consts={"s": np.array([[[0.2]], [[0.5]]], np.float32)}),
    "softmax_opset11_coerced": _one("Softmax", x=X3, opset=11, axis=1),
    "log_softmax_axis1": _one("LogSoftmax", x=X3, axis=1),
    "split_num_outputs": _graph([("Split", ["x"], ["a", "b", "c"], {"axis": 3, "num_outputs": 3})],
                                {"x": R.standard_normal((1, 2, 3, 7)).astype(np.float32)}, None,
                                (("a", TensorProto.FLOAT), ("b", TensorProto.FLOAT), ("c", TensorProto.FLOAT)), opset=18),
    "clip_max_only": _one("Clip", ("x", "", "m"), consts={"m": np.float32(0.3)}),
    "flatten_axis0": _one("Flatten", axis=0), "transpose_default": _one("Transpose", x=X3),
    "squeeze_all": _one("Squeeze", x=X3.reshape(1, 2, 1, 3, 4)),
    "unsqueeze_negative": _one("Unsqueeze", ("x", "a"), x=X3, consts={"a": np.array([-1, 0], I64)}),
    "shape_start_end": _one("Shape", x=X3, out=INT, opset=15, start=1, end=-1),
    "gemm_trans_alpha_beta": _one("Gemm", ("x", "w", "c"), x=X3[0],
                                  consts={"w": R.standard_normal((5, 4)).astype(np.float32), "c": np.float32([[0.5]])},
                                  transB=1, alpha=0.5, beta=2.0),
    "gemm_transA": _one("Gemm", ("x", "w"), x=X3[0], consts={"w": R.standard_normal((3, 2)).astype(np.float32)}, transA=1),
    "div_int_truncates": _one("Div", ("x", "d"), x=np.array([7, -7, 9], I64), consts={"d": np.array([2, 2, -4], I64)},
                              out=INT),
    "variadic_max_min_sum_mean": _graph(
        [("Max", ["x", "b", "c"], ["m"], {}), ("Min", ["x", "b"], ["n"], {}), ("Sum", ["m", "n", "c"], ["s"], {}),
         ("Mean", ["s", "x"], ["y"], {})], {"x": X3},
        {"b": R.standard_normal((3, 1)).astype(np.float32), "c": R.standard_normal(4).astype(np.float32)}),
    "constant_of_shape_range_cast_where": _graph(
        [("ConstantOfShape", ["shp"], ["k"], {"value": helper.make_tensor("v", TensorProto.FLOAT, [1], [1.5])}),
         ("Range", ["r0", "r1", "r2"], ["r"], {}), ("Cast", ["r"], ["rf"], {"to": TensorProto.FLOAT}),
         ("Greater", ["x", "k"], ["g"], {}), ("Where", ["g", "x", "rf"], ["w"], {}), ("Add", ["w", "k"], ["y"], {})],
        {"x": X3 * 2}, {"shp": np.array([2, 3, 4], I64), "r0": np.int64(0), "r1": np.int64(8), "r2": np.int64(2)}),
    "unary_chain": _graph(
        [(op, [a], [b], {}) for op, a, b in [("Abs", "x", "a"), ("Exp", "a", "b"), ("Log", "b", "c"), ("Neg", "c", "d"),
                                             ("Sin", "d", "e"), ("Cos", "e", "f"), ("Tanh", "f", "g"),
                                             ("Reciprocal", "g", "h"), ("Sqrt", "h", "i"), ("Sign", "x", "j")]]
        + [("Add", ["i", "j"], ["y0"], {}), ("Floor", ["x"], ["fl"], {}), ("Ceil", ["x"], ["ce"], {}),
           ("Round", ["x"], ["ro"], {}), ("Sum", ["y0", "fl", "ce", "ro"], ["y"], {})], {"x": X3 * 3}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_single_ops_match_onnxruntime(name):
    model, feeds = CASES[name]
    ref = _session(model).run(None, feeds)
    out = OnnxGraph(model)(*[torch.from_numpy(v) for v in feeds.values()])
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        assert tuple(o.shape) == r.shape, name
        np.testing.assert_allclose(o.numpy().astype(r.dtype), r, rtol=1e-5, atol=1e-5, err_msg=name)


# ------------------------------------------------------------------------------------------------
# build-time refusals


def test_unsupported_op_fails_at_build_with_one_line_naming_it(tmp_path):
    from train.losses import build_pose_loss

    path = save(tiny_rtmpose(13, extra_op="Det"), tmp_path / "det.onnx")
    with pytest.raises(CheckpointError) as err:
        build_pose_loss({"backbone": f"dwpose_onnx:{path}"}, None)
    msg = str(err.value)
    assert "ONNX op Det" in msg and str(path) in msg and "\n" not in msg
    custom = _one("Relu")[0]
    custom.graph.node[0].domain = "com.microsoft"
    with pytest.raises(CheckpointError, match="com.microsoft.Relu"):
        OnnxGraph(custom)
    cubic = _one("Resize", ("x", "", "sc"), consts={"sc": np.array([1, 1, 2, 2], np.float32)}, mode="cubic")[0]
    with pytest.raises(CheckpointError, match="Resize.*mode=cubic"):
        OnnxGraph(cubic)


def test_missing_or_unreadable_estimator_file_is_a_clear_error(tmp_path):
    from train.losses import build_pose_loss

    with pytest.raises(ModelFilesNotFoundError, match="dw-ll_ucoco_384.onnx") as err:
        build_pose_loss({"backbone": f"dwpose_onnx:{tmp_path}"}, None)  # a folder without the DWPose file
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        build_pose_loss({"backbone": f"dwpose_onnx:{tmp_path / 'nope.onnx'}"}, None)
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07not an onnx model at all")
    with pytest.raises(CheckpointError, match="bad.onnx"):
        build_pose_loss({"backbone": f"dwpose_onnx:{tmp_path / 'bad.onnx'}"}, None)


def test_pose_loss_config_is_checked_when_loaded():
    from train.phases import load_config

    assert load_config(None, ["losses.pose.backbone=dwpose_onnx:models/dw-ll_ucoco_384.onnx",
                              "losses.pose.compare=coords"])["losses"]["pose"]["compare"] == "coords"
    for bad in (["losses.pose.backbone=dwpose"], ["losses.pose.backbone=dwpose_onnx:"],
                ["losses.pose.compare=heatmap"]):
        with pytest.raises(ConfigError, match="losses.pose"):
            load_config(None, bad)


# ------------------------------------------------------------------------------------------------
# the loss


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    return save(tiny_rtmpose(17), tmp_path_factory.mktemp("pose_onnx") / "dw-ll_ucoco_384.onnx")


def test_crop_and_normalisation_follow_the_dwpose_backend(tiny_file):
    import cv2

    from echomimic_core.pose.dwpose import MEAN, STD, box_center_scale, fix_aspect, warp_matrix
    from train.losses import build_pose_loss

    loss = build_pose_loss({"backbone": f"dwpose_onnx:{tiny_file}"}, None)
    assert (loss.in_h, loss.in_w) == (32, 24) and not loss.batch_one  # read from the graph's input
    rng = np.random.default_rng(0)
    for h, w in ((64, 64), (48, 80)):
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (0, 0), 1.5)
        center, scale = box_center_scale(np.array([0, 0, w, h], float))  # the backend's whole-frame box
        scale = fix_aspect(scale, loss.in_w / loss.in_h)
        ref = cv2.warpAffine(img, warp_matrix(center, scale, loss.in_w, loss.in_h), (loss.in_w, loss.in_h),
                             flags=cv2.INTER_LINEAR)
        ref = ((ref - MEAN) / STD).transpose(2, 0, 1)
        ours = loss.estimator_input(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1)[0].numpy()
        # cv2 rounds to uint8 and interpolates in fixed point: under one grey level apart
        assert np.abs(ours - ref).max() * STD.min() < 1.0


def test_keypoint_map_loss_is_zero_at_the_target_and_differentiable(tiny_file):
    from train.losses import build_pose_loss

    torch.manual_seed(0)
    target = torch.rand(2, 3, 64, 64) * 2 - 1
    for compare in ("simcc", "coords"):
        loss = build_pose_loss({"backbone": f"dwpose_onnx:{tiny_file}", "compare": compare}, None)
        assert torch.equal(loss(target, target), torch.zeros(2))
        pred = (target + 0.5 * torch.randn_like(target)).clamp(-1, 1).requires_grad_(True)
        per = loss(pred, target)
        assert per.shape == (2,) and (per > 0).all()
        per.sum().backward()
        assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_static_batch_one_graph_runs_sample_by_sample(tmp_path):
    from train.losses import build_pose_loss

    one = build_pose_loss({"backbone": f"dwpose_onnx:{save(tiny_rtmpose(13, batch=1), tmp_path / 'b1.onnx')}"}, None)
    assert one.batch_one
    torch.manual_seed(1)
    pred, target = torch.rand(3, 3, 40, 40) * 2 - 1, torch.rand(3, 3, 40, 40) * 2 - 1
    per = one(pred, target)
    alone = torch.cat([one(pred[i:i + 1], target[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(per, alone)


class _PeakNet(torch.nn.Module):
    """Stand-in estimator with known keypoint maps: keypoint k peaks at a position set by the mean of
    channel k of the input; keypoint 2's maps are all zero on dark images (confidence 0)."""

    def forward(self, x):
        pos = x.mean((2, 3))  # [B, 3]
        bins = torch.arange(40, dtype=torch.float32)
        centre = (20 + 6 * pos)[..., None]
        sx = torch.exp(-(bins - centre) ** 2 / 8.0)
        sy = torch.exp(-(bins - centre) ** 2 / 8.0)
        sx = torch.cat([sx[:, :2], sx[:, 2:] * (pos[:, 2:, None] > -1).float()], 1)
        return sx, sy


def test_maps_are_compared_per_keypoint_weighted_by_the_targets_confidence():
    from train.pose_keypoints import DWPoseKeypointLoss

    target = torch.zeros(1, 3, 16, 12)
    target[:, 2] = -1.0  # keypoint 2 unseen on the target: its x map is zero → weight 0
    for compare in ("simcc", "coords"):
        loss = DWPoseKeypointLoss(_PeakNet(), (16, 12), compare)
        near, far, other = target.clone(), target.clone(), target.clone()
        near[:, 0] += 0.3
        far[:, 0] += 1.0
        other[:, 2] = 1.0  # only the zero-weight keypoint moves
        assert loss(target, target) == 0
        assert 0 < loss(near, target) < loss(far, target)
        assert loss(other, target) == 0


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_phd_training_step_with_the_dwpose_onnx_backbone(tmp_path, fixtures, tiny_file):
    """Two stage-1 steps with every sample in the pose-dominant phase (t ≥ 0.9 T): the pose term
    comes from the ONNX estimator, is positive and finite, and the step trains."""
    from support.train import tiny_cfg, train_run
    from train import data as D

    dataset = D.write_tiny_dataset(tmp_path / "ds", num_clips=2, num_frames=6, size=64, tokens=20)
    cfg = tiny_cfg("stage1_1_initial_pose", tmp_path / "run", fixtures / "weights", dataset,
                   training={"timestep_range": [900, 1000]},
                   losses={"pose": {"backbone": f"dwpose_onnx:{tiny_file}", "compare": "simcc"}})
    tr, result = train_run(cfg)
    assert result["step"] == 2
    last = result["last"]
    assert np.isfinite(last["loss"]) and last["pose"] > 0 and last["detail"] == 0 and last["lpips"] == 0
    assert last["loss"] > last["latent"]  # the pose term is part of the total
    assert type(tr.phd.pose_loss).__name__ == "DWPoseKeypointLoss"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter announces its removal
def test_a_torch_onnx_export_of_rtmpose_layers_round_trips(tmp_path):
    """The graph torch.onnx writes for RTMPose's layer types (the TorchScript exporter at opset 11, as
    mmdeploy exported DWPose) runs in the interpreter like the torch module and onnxruntime."""
    from support.onnx_graphs import rtmpose_like_torch_module

    module = rtmpose_like_torch_module()
    x = torch.randn(1, 3, 32, 24, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "exported.onnx"
    try:
        torch.onnx.export(module, (x,), str(path), input_names=["input"], output_names=["simcc_x", "simcc_y"],
                          opset_version=11, dynamo=False)
    except Exception as exc:  # the legacy exporter is deprecated upstream
        pytest.skip(f"torch.onnx TorchScript export unavailable: {exc}")
    model = onnx.load(str(path))
    assert {"HardSigmoid", "ReduceL2", "Split", "Clip", "MatMul"} <= {n.op_type for n in model.graph.node}
    graph = OnnxGraph(model)
    ref = _session(model).run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = module(x)
    for o, r, w in zip(graph(x), ref, want):
        np.testing.assert_allclose(o.numpy(), r, rtol=0, atol=1e-5)
        torch.testing.assert_close(o, w, rtol=0, atol=1e-5)
