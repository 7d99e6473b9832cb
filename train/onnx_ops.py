"""The ONNX operators of `train/onnx_graph.py`, each written with torch ops so gradients reach the inputs.

Every function takes ``(inputs, attrs, ctx)``: the node's inputs (``None`` for an omitted optional
one), its attributes as Python values (tensors already torch tensors) and a :class:`Ctx` holding the
default-domain opset and the node's output count; it returns a tensor or a tuple of tensors. Semantics
follow the ONNX operator specification, including the opset differences that matter for exported
vision models (Split / Squeeze / Unsqueeze / Reduce* take attributes before opset 13 / 18 and inputs
after; Softmax before opset 13 flattens to 2-D; Clip before 11 takes attributes).

Covered: what an RTMPose / CSPNeXt + RTMCC (GAU) head export contains (Conv, Sigmoid·Mul = SiLU,
HardSigmoid, MaxPool, GlobalAveragePool, Concat, Split, Reshape, ReduceL2 / Pow-ReduceSum-Sqrt,
Clip, Div, MatMul, Unsqueeze, Squeeze, Transpose, Relu, Shape / Gather / Slice / Constant) and the
usual rest of small CNN / transformer exports. Omitted on purpose: control flow (If, Loop, Scan),
random ops, NMS / TopK-style selection, ConvTranspose, cubic Resize. :data:`ATTR_CHECKS` refuses
attribute values the implementations below do not cover, so an unsupported graph fails when it is
built, not in the middle of training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce

import torch
import torch.nn.functional as F


@dataclass
class Ctx:
    opset: int
    n_outputs: int = 1


# TensorProto data types (onnx.TensorProto.DataType values)
DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
          9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


def _ints(t) -> list[int]:
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else t)]


def _scalar(t) -> float | None:
    return None if t is None or (isinstance(t, torch.Tensor) and t.numel() == 0) else float(t)


def _axes(x: torch.Tensor, axes) -> list[int]:
    return [a % x.dim() for a in _ints(axes)]


def _arg(inputs, i, attrs, name):
    """An operand that moved from an attribute to input i in a later opset: whichever the node has."""
    if len(inputs) > i and inputs[i] is not None:
        return inputs[i]
    return attrs.get(name)


# ------------------------------------------------------------------------------------------------
# elementwise


def _div(a, b):
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")  # ONNX integer division truncates
    return a / b


def _binary(fn):
    return lambda i, a, c: fn(i[0], i[1])


def _unary(fn):
    return lambda i, a, c: fn(i[0])


def _variadic(fn):
    return lambda i, a, c: reduce(fn, [x for x in i if x is not None])


def _clip(i, a, c):
    lo, hi = (a.get("min"), a.get("max")) if c.opset < 11 else \
        (_scalar(i[1]) if len(i) > 1 else None, _scalar(i[2]) if len(i) > 2 else None)
    return torch.clamp(i[0], min=lo, max=hi) if (lo is not None or hi is not None) else i[0]


def _hard_sigmoid(x, alpha, beta):
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


def _gelu(i, a, c):
    return F.gelu(i[0], approximate="tanh" if a.get("approximate", "none") == "tanh" else "none")


def _cast(i, a, c):
    return i[0].to(DTYPES[int(a["to"])])


# ------------------------------------------------------------------------------------------------
# convolution, pooling, normalisation


def _spatial_pads(x, a, kernel, strides, dilations) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] for the spatial dims, auto_pad resolved."""
    n = len(kernel)
    mode = a.get("auto_pad", "NOTSET")
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for d in range(n):
            size = x.shape[2 + d]
            total = max((math.ceil(size / strides[d]) - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1 - size, 0)
            small = total // 2
            begin.append(small if mode == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return begin + end
    if mode == "VALID":
        return [0] * (2 * n)
    return list(a.get("pads", [0] * (2 * n)))


def _torch_pad(pads: list[int]) -> list[int]:
    """ONNX [b1..bn, e1..en] → F.pad order (last dim first)."""
    n = len(pads) // 2
    out = []
    for d in reversed(range(n)):
        out += [pads[d], pads[n + d]]
    return out


def _conv(i, a, c):
    x, w = i[0], i[1]
    b = i[2] if len(i) > 2 else None
    kernel = list(a.get("kernel_shape", w.shape[2:]))
    n = len(kernel)
    strides, dil = list(a.get("strides", [1] * n)), list(a.get("dilations", [1] * n))
    pads = _spatial_pads(x, a, kernel, strides, dil)
    conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
    if pads[:n] == pads[n:]:
        return conv(x, w, b, strides, pads[:n], dil, int(a.get("group", 1)))
    return conv(F.pad(x, _torch_pad(pads)), w, b, strides, 0, dil, int(a.get("group", 1)))


def _pool_setup(x, a):
    kernel = list(a["kernel_shape"])
    n = len(kernel)
    strides, dil = list(a.get("strides", [1] * n)), list(a.get("dilations", [1] * n))
    return kernel, n, strides, dil, _spatial_pads(x, a, kernel, strides, dil)


def _max_pool(i, a, c):
    x = i[0]
    kernel, n, strides, dil, pads = _pool_setup(x, a)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
    if any(pads):
        x = F.pad(x, _torch_pad(pads), value=-math.inf)
    return pool(x, kernel, strides, 0, dil, ceil_mode=bool(a.get("ceil_mode", 0)))


def _avg_pool(i, a, c):
    x = i[0]
    kernel, n, strides, _, pads = _pool_setup(x, a)
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1]
    ceil = bool(a.get("ceil_mode", 0))
    if not any(pads):
        return pool(x, kernel, strides, 0, ceil_mode=ceil)
    tp = _torch_pad(pads)
    mean = pool(F.pad(x, tp), kernel, strides, 0, ceil_mode=ceil)
    if a.get("count_include_pad", 0):
        return mean
    ones = F.pad(torch.ones_like(x[:1, :1]), tp)  # share of real (unpadded) cells in each window
    return mean / pool(ones, kernel, strides, 0, ceil_mode=ceil)


def _batch_norm(i, a, c):
    return F.batch_norm(i[0], i[3], i[4], i[1], i[2], training=False, eps=float(a.get("epsilon", 1e-5)))


def _instance_norm(i, a, c):
    return F.instance_norm(i[0], weight=i[1], bias=i[2], eps=float(a.get("epsilon", 1e-5)))


def _layer_norm(i, a, c):
    x = i[0]
    axis = int(a.get("axis", -1)) % x.dim()
    dims = list(range(axis, x.dim()))
    mean = x.mean(dims, keepdim=True)
    inv = torch.rsqrt((x - mean).pow(2).mean(dims, keepdim=True) + float(a.get("epsilon", 1e-5)))
    y = (x - mean) * inv * i[1]
    if len(i) > 2 and i[2] is not None:
        y = y + i[2]
    return y, mean, inv


def _softmax(fn):
    def op(i, a, c):
        x = i[0]
        axis = int(a.get("axis", -1 if c.opset >= 13 else 1)) % x.dim()
        if c.opset >= 13:
            return fn(x, dim=axis)
        flat = x.reshape(int(math.prod(x.shape[:axis])), -1)  # opset < 13: coerced to 2-D at `axis`
        return fn(flat, dim=1).reshape(x.shape)
    return op


def _gemm(i, a, c):
    A = i[0].t() if a.get("transA", 0) else i[0]
    B = i[1].t() if a.get("transB", 0) else i[1]
    y = float(a.get("alpha", 1.0)) * (A @ B)
    if len(i) > 2 and i[2] is not None:
        y = y + float(a.get("beta", 1.0)) * i[2]
    return y


# ------------------------------------------------------------------------------------------------
# Resize (nearest / linear, separable along every axis whose size changes)


def _resize_source(out_idx, in_size, out_size, scale, mode):
    if mode == "align_corners":
        return out_idx * ((in_size - 1) / (out_size - 1)) if out_size > 1 else out_idx * 0.0
    if mode == "asymmetric":
        return out_idx / scale
    if mode == "pytorch_half_pixel" and out_size == 1:
        return out_idx * 0.0
    return (out_idx + 0.5) / scale - 0.5  # half_pixel, pytorch_half_pixel


def _nearest(src, rule):
    if rule == "floor":
        return torch.floor(src)
    if rule == "ceil":
        return torch.ceil(src)
    if rule == "round_prefer_ceil":
        return torch.floor(src + 0.5)
    return torch.ceil(src - 0.5)  # round_prefer_floor (the default)


def _resize(i, a, c):
    x = i[0]
    scales = i[1] if c.opset < 11 else (i[2] if len(i) > 2 else None)
    sizes = i[3] if len(i) > 3 else None
    if sizes is not None and sizes.numel():
        out_sizes = _ints(sizes)
        ratio = [o / s for o, s in zip(out_sizes, x.shape)]
    else:
        ratio = [float(s) for s in scales.tolist()]
        out_sizes = [int(math.floor(s * r)) for s, r in zip(x.shape, ratio)]
    mode = a.get("mode", "nearest")
    ctm = a.get("coordinate_transformation_mode", "asymmetric" if c.opset < 11 else "half_pixel")
    y = x
    for d, (n_in, n_out, r) in enumerate(zip(x.shape, out_sizes, ratio)):
        if n_in == n_out and r == 1.0:
            continue
        idx = torch.arange(n_out, device=x.device, dtype=torch.float64)
        src = _resize_source(idx, n_in, n_out, r, ctm)
        if mode == "nearest":
            pick = _nearest(src, a.get("nearest_mode", "round_prefer_floor")).clamp(0, n_in - 1).long()
            y = y.index_select(d, pick)
            continue
        src = src.clamp(0, n_in - 1)
        lo = src.floor().long()
        hi = (lo + 1).clamp(max=n_in - 1)
        shape = [1] * y.dim()
        shape[d] = n_out
        w = (src - lo).to(y.dtype).view(shape)
        y = y.index_select(d, lo) * (1 - w) + y.index_select(d, hi) * w
    return y


# ------------------------------------------------------------------------------------------------
# shape and indexing


def _reshape(i, a, c):
    x, shape = i[0], _ints(i[1])
    if not a.get("allowzero", 0):
        shape = [x.shape[k] if s == 0 else s for k, s in enumerate(shape)]
    return x.reshape(shape)


def _flatten(i, a, c):
    x = i[0]
    axis = int(a.get("axis", 1)) % (x.dim() + 1) if x.dim() else 0
    return x.reshape(int(math.prod(x.shape[:axis])), int(math.prod(x.shape[axis:])))


def _transpose(i, a, c):
    return i[0].permute(a.get("perm", list(reversed(range(i[0].dim())))))


def _split(i, a, c):
    x = i[0]
    axis = int(a.get("axis", 0)) % x.dim()
    split = _arg(i, 1, a, "split")
    if split is None or len(_ints(split)) == 0:
        n = int(a.get("num_outputs", c.n_outputs))
        return tuple(torch.split(x, math.ceil(x.shape[axis] / n), dim=axis))
    return tuple(torch.split(x, _ints(split), dim=axis))


def _slice(i, a, c):
    x = i[0]
    if c.opset < 10:
        starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
    else:
        starts, ends = _ints(i[1]), _ints(i[2])
        axes = _ints(i[3]) if len(i) > 3 and i[3] is not None else None
        steps = _ints(i[4]) if len(i) > 4 and i[4] is not None else None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax %= x.dim()
        n = x.shape[ax]
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
        else:
            s, e = min(max(s, 0), n - 1), min(max(e, -1), n - 1)
        idx = torch.arange(s, e, st, device=x.device)
        x = x.index_select(ax, idx)
    return x


def _gather(i, a, c):
    x, idx = i[0], i[1].long()
    axis = int(a.get("axis", 0)) % x.dim()
    flat = idx.reshape(-1) % x.shape[axis]  # negative indices count from the end
    out = x.index_select(axis, flat)
    return out.reshape(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1:]))


def _shape(i, a, c):
    dims = list(i[0].shape)[a.get("start", 0):a.get("end", None)]
    return torch.tensor(dims, dtype=torch.int64, device=i[0].device)


def _unsqueeze(i, a, c):
    x = i[0]
    axes = _ints(_arg(i, 1, a, "axes"))
    rank = x.dim() + len(axes)
    for ax in sorted(ax % rank for ax in axes):
        x = x.unsqueeze(ax)
    return x


def _squeeze(i, a, c):
    x = i[0]
    axes = _arg(i, 1, a, "axes")
    if axes is None:
        return x.squeeze()
    for ax in sorted(_axes(x, axes), reverse=True):
        x = x.squeeze(ax)
    return x


def _expand(i, a, c):
    return i[0].expand(torch.broadcast_shapes(i[0].shape, tuple(_ints(i[1]))))


def _constant_of_shape(i, a, c):
    value = a.get("value", torch.zeros(1))
    return torch.full(tuple(_ints(i[0])), value.reshape(-1)[0].item(), dtype=value.dtype, device=i[0].device)


def _reduce(fn):
    def op(i, a, c):
        x = i[0]
        axes = _arg(i, 1, a, "axes")  # an attribute before opset 18 (ReduceSum: 13), an input after
        keep = bool(a.get("keepdims", 1))
        if axes is None or len(_ints(axes)) == 0:
            if a.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return fn(x, _axes(x, axes), keep)
    return op


def _argext(fn):
    def op(i, a, c):
        x = i[0]
        axis = int(a.get("axis", 0)) % x.dim()
        if a.get("select_last_index", 0):
            return x.shape[axis] - 1 - fn(x.flip(axis), dim=axis, keepdim=bool(a.get("keepdims", 1)))
        return fn(x, dim=axis, keepdim=bool(a.get("keepdims", 1)))
    return op


def _pad(i, a, c):
    x = i[0]
    if c.opset < 11:
        pads, value = list(a["pads"]), float(a.get("value", 0.0))
    else:
        pads, value = _ints(i[1]), (_scalar(i[2]) if len(i) > 2 else None) or 0.0
        if len(i) > 3 and i[3] is not None:  # opset 18 axes: pads only for those axes
            axes = _axes(x, i[3])
            full = [0] * (2 * x.dim())
            for k, ax in enumerate(axes):
                full[ax], full[x.dim() + ax] = pads[k], pads[len(axes) + k]
            pads = full
    tp = _torch_pad(pads)
    while len(tp) > 2 and tp[-1] == 0 and tp[-2] == 0:  # F.pad's reflect/replicate want only the padded dims
        tp = tp[:-2]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[a.get("mode", "constant")]
    return F.pad(x, tp, mode=mode, value=value) if mode == "constant" else F.pad(x, tp, mode=mode)


OPS = {
    # elementwise
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul), "Div": _binary(_div),
    "Pow": _binary(lambda x, y: torch.pow(x, y).to(x.dtype)),
    "Equal": _binary(torch.eq), "Less": _binary(torch.lt), "Greater": _binary(torch.gt),
    "LessOrEqual": _binary(torch.le), "GreaterOrEqual": _binary(torch.ge),
    "And": _binary(torch.logical_and), "Or": _binary(torch.logical_or),
    "Max": _variadic(torch.maximum), "Min": _variadic(torch.minimum), "Sum": _variadic(torch.add),
    "Mean": lambda i, a, c: reduce(torch.add, i) / len(i),
    "Sqrt": _unary(torch.sqrt), "Exp": _unary(torch.exp), "Log": _unary(torch.log), "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs), "Reciprocal": _unary(torch.reciprocal), "Floor": _unary(torch.floor),
    "Ceil": _unary(torch.ceil), "Round": _unary(torch.round), "Sign": _unary(torch.sign),
    "Sin": _unary(torch.sin), "Cos": _unary(torch.cos), "Erf": _unary(torch.erf), "Not": _unary(torch.logical_not),
    "Relu": _unary(torch.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "Softplus": _unary(F.softplus), "Mish": _unary(F.mish), "Identity": _unary(lambda x: x),
    "LeakyRelu": lambda i, a, c: F.leaky_relu(i[0], float(a.get("alpha", 0.01))),
    "Elu": lambda i, a, c: F.elu(i[0], float(a.get("alpha", 1.0))),
    "PRelu": lambda i, a, c: torch.where(i[0] >= 0, i[0], i[0] * i[1]),
    "HardSigmoid": lambda i, a, c: _hard_sigmoid(i[0], float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))),
    "HardSwish": lambda i, a, c: i[0] * _hard_sigmoid(i[0], 1 / 6, 0.5),
    "Gelu": _gelu, "Clip": _clip, "Where": lambda i, a, c: torch.where(i[0].bool(), i[1], i[2]),
    "Cast": _cast, "CastLike": lambda i, a, c: i[0].to(i[1].dtype),
    "Dropout": lambda i, a, c: i[0],  # inference: the identity
    # nn
    "Conv": _conv, "MaxPool": _max_pool, "AveragePool": _avg_pool,
    "GlobalAveragePool": lambda i, a, c: i[0].mean(tuple(range(2, i[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda i, a, c: i[0].amax(tuple(range(2, i[0].dim())), keepdim=True),
    "BatchNormalization": _batch_norm, "InstanceNormalization": _instance_norm, "LayerNormalization": _layer_norm,
    "Softmax": _softmax(torch.softmax), "LogSoftmax": _softmax(torch.log_softmax),
    "MatMul": _binary(torch.matmul), "Gemm": _gemm, "Resize": _resize,
    "Einsum": lambda i, a, c: torch.einsum(a["equation"], *i),
    # shape and indexing
    "Reshape": _reshape, "Flatten": _flatten, "Transpose": _transpose, "Split": _split, "Slice": _slice,
    "Concat": lambda i, a, c: torch.cat([x for x in i if x is not None], dim=int(a["axis"])),
    "Gather": _gather, "Shape": _shape, "Size": lambda i, a, c: torch.tensor(i[0].numel(), dtype=torch.int64),
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Expand": _expand,
    "Tile": lambda i, a, c: i[0].repeat(_ints(i[1])), "ConstantOfShape": _constant_of_shape,
    "Range": lambda i, a, c: torch.arange(i[0].item(), i[1].item(), i[2].item(), dtype=i[0].dtype,
                                          device=i[0].device),
    "Pad": _pad,
    "ArgMax": _argext(torch.argmax), "ArgMin": _argext(torch.argmin),
    # reductions
    "ReduceMean": _reduce(lambda x, d, k: x.mean(d, keepdim=k)),
    "ReduceSum": _reduce(lambda x, d, k: x.sum(d, keepdim=k)),
    "ReduceMax": _reduce(lambda x, d, k: x.amax(d, keepdim=k)),
    "ReduceMin": _reduce(lambda x, d, k: x.amin(d, keepdim=k)),
    "ReduceProd": _reduce(lambda x, d, k: reduce(lambda t, ax: t.prod(ax, keepdim=k), sorted(d, reverse=True), x)),
    "ReduceL1": _reduce(lambda x, d, k: x.abs().sum(d, keepdim=k)),
    "ReduceL2": _reduce(lambda x, d, k: x.pow(2).sum(d, keepdim=k).sqrt()),
    "ReduceSumSquare": _reduce(lambda x, d, k: x.pow(2).sum(d, keepdim=k)),
    "ReduceLogSumExp": _reduce(lambda x, d, k: torch.logsumexp(x, d, keepdim=k)),
}


def _refuse(cond: bool, what: str):
    return what if cond else None


# op -> (attrs, n_outputs_used) -> a description of what is not covered, or None
ATTR_CHECKS = {
    "Resize": lambda a, n: _refuse(a.get("mode", "nearest") not in ("nearest", "linear"), f"mode={a.get('mode')}")
    or _refuse(a.get("coordinate_transformation_mode", "half_pixel") not in
               ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"),
               f"coordinate_transformation_mode={a.get('coordinate_transformation_mode')}")
    or _refuse(bool(a.get("antialias", 0)), "antialias=1")
    or _refuse(a.get("keep_aspect_ratio_policy", "stretch") != "stretch", "keep_aspect_ratio_policy")
    or _refuse(bool(a.get("exclude_outside", 0)), "exclude_outside=1"),
    "MaxPool": lambda a, n: _refuse(n > 1, "the Indices output"),
    "BatchNormalization": lambda a, n: _refuse(bool(a.get("training_mode", 0)) or n > 1, "training mode"),
    "Pad": lambda a, n: _refuse(a.get("mode", "constant") not in ("constant", "reflect", "edge"),
                                f"mode={a.get('mode')}"),
    "Cast": lambda a, n: _refuse(int(a.get("to", 1)) not in DTYPES, f"to={a.get('to')}"),
    "Gelu": lambda a, n: _refuse(a.get("approximate", "none") not in ("none", "tanh"),
                                 f"approximate={a.get('approximate')}"),
}
