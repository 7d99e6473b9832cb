"""Run an ONNX graph as a frozen torch module, differentiable with respect to its inputs.

Why: the pose-dominant PhD loss needs a pose estimator *inside* the autograd graph (gradients flow
from its keypoint maps back to the predicted image), and the estimator users have is DWPose's
RTMPose ONNX file. onnxruntime is not differentiable, and the converter package onnx2torch requires
torchvision, which cannot load beside this project's CPU torch (shared/reference/ENVIRONMENT.md §2).
So this module interprets the graph itself: nothing is converted or written.

* ``OnnxGraph.load(path)`` reads the file with the ``onnx`` package, turns every initializer and every
  ``Constant`` node into a non-persistent buffer (frozen: no parameters, not in state dicts, moved by
  ``.to(device)``), and checks at build time that every node is a default-domain op that
  ``train/onnx_ops.py`` implements with the attribute values it has and that every node input is
  defined before it is used. An unsupported graph fails with one line naming the op.
* ``forward(*inputs)`` runs the nodes in file order (ONNX stores them topologically sorted) with
  torch ops and returns the graph outputs as a tuple; intermediate tensors are dropped after their
  last use.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from echomimic_core.errors import BackendUnavailableError, CheckpointError, ModelFilesNotFoundError
from train.onnx_ops import ATTR_CHECKS, OPS, Ctx


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise BackendUnavailableError("reading an ONNX pose model needs the onnx package: pip install onnx") from None
    return onnx, numpy_helper


def _tensor(proto) -> torch.Tensor:
    _, numpy_helper = _onnx()
    return torch.from_numpy(numpy_helper.to_array(proto).copy())


def _attributes(node) -> dict:
    onnx, _ = _onnx()
    out = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = _tensor(value)
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        out[attr.name] = value
    return out


def _constant_value(attrs: dict) -> torch.Tensor:
    if "value" in attrs:
        return attrs["value"]
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in attrs:
            return torch.tensor(attrs[key], dtype=dtype)
    raise CheckpointError(f"Constant node with attributes {sorted(attrs)} is not supported (sparse or string)")


class OnnxGraph(nn.Module):
    """An ONNX ``ModelProto`` as a torch module (see the module docstring). ``source`` names the graph
    in error messages."""

    def __init__(self, model, source: str = "the ONNX graph"):
        super().__init__()
        graph = model.graph
        self.source = source
        self.opset = next((imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), 1)
        self._names: dict[str, str] = {}  # onnx value name -> buffer attribute
        for init in graph.initializer:
            self._buffer(init.name, _tensor(init))
        defined = set(self._names)
        self.input_names = [v.name for v in graph.input if v.name not in defined]
        self.input_shapes = [[d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                             for v in graph.input if v.name not in defined]
        self.output_names = [v.name for v in graph.output]
        defined |= set(self.input_names)
        self.nodes = []
        for node in graph.node:
            where = f"{source}: ONNX op {node.domain + '.' if node.domain else ''}{node.op_type}" \
                    f"{f' (node {node.name!r})' if node.name else ''}"
            if node.domain not in ("", "ai.onnx") or node.op_type not in OPS and node.op_type != "Constant":
                raise CheckpointError(f"{where} is not supported by the pose-loss ONNX interpreter "
                                      "(train/onnx_ops.py); use losses.pose.backbone: torchscript:<file> "
                                      "or pose_encoder")
            attrs = _attributes(node)
            outputs = list(node.output)
            if node.op_type == "Constant":
                self._buffer(outputs[0], _constant_value(attrs))
                defined.add(outputs[0])
                continue
            used = len([o for o in outputs if o])
            problem = ATTR_CHECKS.get(node.op_type, lambda a, n: None)(attrs, used)
            if problem:
                raise CheckpointError(f"{where} with {problem} is not supported by the pose-loss ONNX interpreter")
            missing = [n for n in node.input if n and n not in defined]
            if missing:
                raise CheckpointError(f"{where} reads {missing[0]!r} before anything defines it (not a sorted graph)")
            defined.update(o for o in outputs if o)
            self.nodes.append((node.op_type, list(node.input), outputs, attrs, Ctx(self.opset, len(outputs))))
        absent = [n for n in self.output_names if n not in defined]
        if absent:
            raise CheckpointError(f"{source}: graph output {absent[0]!r} is never computed")
        self._free = self._last_uses()

    def _buffer(self, name: str, value: torch.Tensor) -> None:
        attr = f"onnx_{len(self._names)}"
        self.register_buffer(attr, value, persistent=False)
        self._names[name] = attr

    def _last_uses(self) -> list[list[str]]:
        """Per node: the values read for the last time there (freed after it; graph outputs are kept)."""
        last: dict[str, int] = {}
        for k, (_, inputs, _, _, _) in enumerate(self.nodes):
            for n in inputs:
                if n and n not in self._names:
                    last[n] = k
        free = [[] for _ in self.nodes]
        for n, k in last.items():
            if n not in self.output_names:
                free[k].append(n)
        return free

    @classmethod
    def load(cls, path: str | Path) -> "OnnxGraph":
        onnx, _ = _onnx()
        path = Path(path)
        if not path.is_file():
            raise ModelFilesNotFoundError(f"ONNX file not found: {path}")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # protobuf decode errors have many types
            raise CheckpointError(f"cannot read {path} as an ONNX model ({type(exc).__name__}: {exc})") from None
        return cls(model, source=str(path))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise TypeError(f"{self.source} takes {len(self.input_names)} inputs, got {len(inputs)}")
        env = {name: getattr(self, attr) for name, attr in self._names.items()}
        env.update(zip(self.input_names, inputs))
        for (op, names, outputs, attrs, ctx), free in zip(self.nodes, self._free):
            result = OPS[op]([env[n] if n else None for n in names], attrs, ctx)
            if isinstance(result, torch.Tensor):
                result = (result,)
            for name, value in zip(outputs, result):
                if name:
                    env[name] = value
            for name in free:
                env.pop(name, None)
        return tuple(env[n] for n in self.output_names)
