"""Tiny ONNX graphs for the pose-loss interpreter tests, written with the `onnx` package.

`tiny_rtmpose(opset)` is shaped like DWPose's RTMPose export, at toy size: a CSPNeXt-like backbone
(conv + SiLU as Sigmoid·Mul, BatchNormalization, depthwise conv, channel split into max/avg pools,
SPPF-style pooling + Concat, channel attention GlobalAveragePool → Conv → HardSigmoid → Mul, a
stride-2 stage upsampled back with Resize) and an RTMCC head (7×7 conv to K maps, a dynamic reshape
through Shape/Gather/Unsqueeze/Concat, ScaleNorm with ReduceL2 and with Pow/ReduceSum/Sqrt, Clip,
MatMul, a GAU block: Split into u/v/base, Unsqueeze·γ+β, Split+Squeeze into q/k, Transpose, MatMul,
Div by √s, Relu, Pow 2, Softmax, a residual Mul+Add), GELU written with Erf, LayerNormalization
(opset ≥ 17; by hand below), Flatten + Gemm and Slice, and the outputs simcc_x [N, K, 2W] and
simcc_y [N, K, 2H]. The opset changes which operands are attributes or inputs (Split, Squeeze,
Unsqueeze, Reduce*), so the tests build it at several opsets.
"""

from __future__ import annotations

import numpy as np


class _Builder:
    def __init__(self, opset: int, seed: int):
        from onnx import helper

        self.h, self.opset = helper, opset
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, stem):
        self.n += 1
        return f"{stem}_{self.n}"

    def const(self, value, stem="c"):
        from onnx import numpy_helper

        arr = np.asarray(value)
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def weight(self, *shape, scale=None):
        fan = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        w = self.rng.standard_normal(shape) * (scale if scale is not None else fan ** -0.5)
        return self.const(w.astype(np.float32), "w")

    def op(self, op_type, inputs, n_out=1, **attrs):
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.h.make_node(op_type, inputs, outs, name=self.name("n" + op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    # ---- opset-dependent forms
    def split(self, x, sizes, axis):
        if self.opset >= 13:
            return self.op("Split", [x, self.const(np.array(sizes, np.int64))], len(sizes), axis=axis)
        return self.op("Split", [x], len(sizes), axis=axis, split=list(sizes))

    def unsqueeze(self, x, axes):
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const(np.array(axes, np.int64))])
        return self.op("Unsqueeze", [x], axes=list(axes))

    def squeeze(self, x, axes):
        if self.opset >= 13:
            return self.op("Squeeze", [x, self.const(np.array(axes, np.int64))])
        return self.op("Squeeze", [x], axes=list(axes))

    def reduce(self, op_type, x, axes, keepdims=1):
        if self.opset >= 18 or (op_type == "ReduceSum" and self.opset >= 13):
            return self.op(op_type, [x, self.const(np.array(axes, np.int64))], keepdims=keepdims)
        return self.op(op_type, [x], axes=list(axes), keepdims=keepdims)

    # ---- blocks
    def silu(self, x):
        return self.op("Mul", [x, self.op("Sigmoid", [x])])

    def conv(self, x, cin, cout, k, stride=1, group=1, bias=True, pads=None):
        w = self.weight(cout, cin // group, k, k)
        ins = [x, w] + ([self.const(self.rng.standard_normal(cout).astype(np.float32) * 0.1)] if bias else [])
        p = pads if pads is not None else [k // 2] * 4
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=p, group=group)

    def scale_norm(self, x, dim, via_l2):
        if via_l2:
            norm = self.reduce("ReduceL2", x, [-1])
        else:
            norm = self.op("Sqrt", [self.reduce("ReduceSum", self.op("Pow", [x, self.const(np.float32(2.0))]), [-1])])
        norm = self.op("Mul", [norm, self.const(np.float32(dim ** -0.5))])
        norm = self.op("Clip", [norm, self.const(np.float32(1e-5)), ""])
        g = self.const((1 + 0.1 * self.rng.standard_normal(dim)).astype(np.float32))
        return self.op("Mul", [self.op("Div", [x, norm]), g])

    def layer_norm(self, x, dim):
        scale = self.const((1 + 0.1 * self.rng.standard_normal(dim)).astype(np.float32))
        bias = self.const((0.1 * self.rng.standard_normal(dim)).astype(np.float32))
        if self.opset >= 17:
            return self.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=1e-5)
        mean = self.reduce("ReduceMean", x, [-1])
        d = self.op("Sub", [x, mean])
        var = self.reduce("ReduceMean", self.op("Mul", [d, d]), [-1])
        inv = self.op("Reciprocal", [self.op("Sqrt", [self.op("Add", [var, self.const(np.float32(1e-5))])])])
        return self.op("Add", [self.op("Mul", [self.op("Mul", [d, inv]), scale]), bias])


def tiny_rtmpose(opset: int = 17, height: int = 32, width: int = 24, keypoints: int = 5, batch=None,
                 seed: int = 0, extra_op: str | None = None):
    """A ModelProto (see the module docstring), opset >= 11. batch: None = a symbolic batch dim, 1 =
    static (the DWPose file's); extra_op: append a node of that type (to test refusal of unsupported ops)."""
    from onnx import TensorProto, checker, helper

    assert opset >= 11

    b = _Builder(opset, seed)
    x = "input"
    h = b.silu(b.op("BatchNormalization", [b.conv(x, 3, 8, 3, stride=2),
                                           b.const(np.ones(8, np.float32) * 1.1), b.const(np.zeros(8, np.float32) + 0.05),
                                           b.const(np.zeros(8, np.float32) + 0.02), b.const(np.ones(8, np.float32) * 0.9)],
                    epsilon=1e-5))                                                          # [N, 8, H/2, W/2]
    h = b.op("LeakyRelu", [b.conv(b.conv(h, 8, 8, 5, group=8), 8, 8, 1)], alpha=0.1)       # depthwise + pointwise
    a, c = b.split(h, [4, 4], axis=1)
    a = b.op("MaxPool", [a], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    c = b.op("AveragePool", [c], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0)
    h = b.op("Concat", [a, c], axis=1)
    h = b.conv(b.op("Concat", [h, b.op("MaxPool", [h], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])],
                    axis=1), 16, 8, 1)                                                      # SPPF-like
    att = b.op("HardSigmoid", [b.conv(b.op("GlobalAveragePool", [h]), 8, 8, 1)], alpha=1 / 6, beta=0.5)
    h = b.op("Mul", [h, att])                                                               # channel attention
    low = b.silu(b.conv(h, 8, 16, 3, stride=2))                                             # [N, 16, H/4, W/4]
    up = b.op("Resize", [low, b.const(np.zeros(0, np.float32)), b.const(np.array([1, 1, 2, 2], np.float32))], mode="linear",
              coordinate_transformation_mode="half_pixel")
    h = b.op("Add", [up, b.conv(h, 8, 16, 1)])
    h = b.op("Sub", [h, b.reduce("ReduceMean", h, [1])])
    h = b.op("AveragePool", [h], kernel_shape=[2, 2], strides=[2, 2])                       # [N, 16, H/4, W/4]
    K, hw = keypoints, (height // 4) * (width // 4)
    maps = b.conv(h, 16, K, 7, pads=[3, 3, 3, 3])                                           # [N, K, H/4, W/4]
    n = b.unsqueeze(b.op("Gather", [b.op("Shape", [maps]), b.const(np.array(0, np.int64))], axis=0), [0])
    feats = b.op("Reshape", [maps, b.op("Concat", [n, b.const(np.array([K, -1], np.int64))], axis=0)])
    feats = b.op("MatMul", [b.scale_norm(feats, hw, via_l2=True), b.weight(hw, 16)])       # mlp → [N, K, 16]
    # GAU (RTMCC block), e = 32, s = 8
    inp = feats
    uv = b.silu(b.op("MatMul", [b.scale_norm(feats, 16, via_l2=False), b.weight(16, 72)]))
    u, v, base = b.split(uv, [32, 32, 8], axis=2)
    base = b.op("Add", [b.op("Mul", [b.unsqueeze(base, [2]), b.weight(2, 8, scale=1.0)]), b.weight(2, 8, scale=0.1)])
    q, k = (b.squeeze(t, [2]) for t in b.split(base, [1, 1], axis=2))
    qk = b.op("Div", [b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 2, 1])]), b.const(np.float32(np.sqrt(8.0)))])
    kernel = b.op("Pow", [b.op("Relu", [qk]), b.const(np.float32(2.0))])
    kernel = b.op("Add", [kernel, b.op("Softmax", [qk], axis=-1 if opset >= 13 else 2)])
    o = b.op("MatMul", [b.op("Mul", [u, b.op("MatMul", [kernel, v])]), b.weight(32, 16)])
    feats = b.op("Add", [b.op("Mul", [inp, b.const(np.ones(16, np.float32) * 0.9)]), o])
    gelu = b.op("Mul", [b.op("Mul", [feats, b.const(np.float32(0.5))]),
                        b.op("Add", [b.op("Erf", [b.op("Div", [feats, b.const(np.float32(np.sqrt(2.0)))])]),
                                     b.const(np.float32(1.0))])])
    feats = b.layer_norm(b.op("Add", [feats, gelu]), 16)
    # cls_x through Flatten + Gemm and back, cls_y through MatMul; Slice trims a padded column
    flat = b.op("Flatten", [feats], axis=2)                                                 # [N·K, 16]
    sx = b.op("Gemm", [flat, b.weight(2 * width + 1, 16), b.const(np.zeros(2 * width + 1, np.float32) + 0.01)],
              transB=1, alpha=1.0, beta=1.0)
    sx = b.op("Slice", [sx, b.const(np.array([0], np.int64)), b.const(np.array([2 * width], np.int64)),
                        b.const(np.array([1], np.int64))])
    nk = b.op("Slice", [b.op("Shape", [feats]), b.const(np.array([0], np.int64)), b.const(np.array([2], np.int64))])
    simcc_x = b.op("Reshape", [sx, b.op("Concat", [nk, b.const(np.array([-1], np.int64))], axis=0)])
    simcc_y = b.op("MatMul", [feats, b.weight(16, 2 * height)])
    if extra_op:
        simcc_y = b.op(extra_op, [simcc_y])
    b.nodes.append(helper.make_node("Identity", [simcc_x], ["simcc_x"]))
    b.nodes.append(helper.make_node("Identity", [simcc_y], ["simcc_y"]))
    dim = "batch" if batch is None else batch
    graph = helper.make_graph(
        b.nodes, "tiny_rtmpose", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [dim, 3, height, width])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [dim, keypoints, 2 * width]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [dim, keypoints, 2 * height])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="echomimic-tests")
    if not extra_op:
        checker.check_model(model)
    return model


def save(model, path) -> str:
    import onnx

    onnx.save(model, str(path))
    return str(path)


def rtmpose_like_torch_module(height: int = 32, width: int = 24, keypoints: int = 5):
    """A torch module with the layer types of RTMPose (CSPNeXt stem + channel attention + SPPF pooling,
    RTMCC head: 7×7 conv, ScaleNorm via torch.norm, GAU with split/unbind/bmm/relu², SimCC linears), to be
    exported by torch.onnx the way mmdeploy exported DWPose (TorchScript exporter, opset 11)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    hw = (height // 2) * (width // 2)

    class ScaleNorm(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.scale, self.g = dim ** -0.5, nn.Parameter(torch.ones(1) * 1.1)

        def forward(self, x):
            return x / (torch.norm(x, dim=-1, keepdim=True) * self.scale).clamp(min=1e-5) * self.g

    class RTMPoseLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.SiLU())
            self.att, self.hsig = nn.Conv2d(8, 8, 1), nn.Hardsigmoid()
            self.mix = nn.Conv2d(16, 8, 1)
            self.final = nn.Conv2d(8, keypoints, 7, 1, 3)
            self.mlp = nn.Sequential(ScaleNorm(hw), nn.Linear(hw, 16, bias=False))
            self.ln, self.uv = ScaleNorm(16), nn.Linear(16, 72, bias=False)
            self.gamma, self.beta = nn.Parameter(torch.rand(2, 8)), nn.Parameter(torch.rand(2, 8) * 0.1)
            self.o, self.res = nn.Linear(32, 16, bias=False), nn.Parameter(torch.ones(16) * 0.9)
            self.cls_x, self.cls_y = nn.Linear(16, 2 * width, bias=False), nn.Linear(16, 2 * height, bias=False)

        def forward(self, x):
            h = self.stem(x)
            h = h * self.hsig(self.att(F.adaptive_avg_pool2d(h, 1)))
            h = self.mix(torch.cat([h, F.max_pool2d(h, 5, 1, 2)], 1))
            f = self.mlp(torch.flatten(self.final(h), 2))
            u, v, base = torch.split(F.silu(self.uv(self.ln(f))), [32, 32, 8], dim=2)
            q, k = torch.unbind(base.unsqueeze(2) * self.gamma[None, None] + self.beta, dim=2)
            kernel = torch.square(F.relu(torch.bmm(q, k.permute(0, 2, 1)) / 8 ** 0.5))
            f = f * self.res + self.o(u * torch.bmm(kernel, v))
            return self.cls_x(f), self.cls_y(f)

    return RTMPoseLike().eval()
