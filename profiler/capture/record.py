"""One real run of the traced graph on the example inputs: per node, the shapes, dtypes, storages,
module attributes and source line it had (``NodeRecord``). Nothing is guessed from types."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..errors import InputSpecError, first_line
from ..graph import SourceLocation, TensorMeta, TensorRole, dtype_name
from ..progress import checkpoint
from .failures import NodeFailure, shape_text
from .opkinds import target_name

__all__ = ["NodeRecord", "module_attrs", "call_attrs", "source_location", "record_nodes", "tensor_meta", "tensors_of", "storage_ptr", "module_stack"]

_TORCH_DIR = os.path.dirname(torch.__file__)
_FRAME_RE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')


def tensor_meta(t: torch.Tensor, role: TensorRole = TensorRole.ACTIVATION, name: str = "") -> TensorMeta:
    return TensorMeta(tuple(int(s) for s in t.shape), dtype_name(t.dtype), role, name)


def tensors_of(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [v for item in value for v in tensors_of(item)]
    if isinstance(value, dict):
        return [v for item in value.values() for v in tensors_of(item)]
    return []


def storage_ptr(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return -1


def _jsonable(v: Any) -> Any:
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    if isinstance(v, (tuple, list)) and all(isinstance(x, bool | int | float | str) for x in v):
        return list(v)
    if isinstance(v, Enum):
        return str(v.value)
    return None


_MODULE_ATTRS = (
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
    "in_features", "out_features", "num_features", "affine", "eps", "normalized_shape",
    "elementwise_affine", "num_groups", "embed_dim", "num_heads", "kdim", "vdim", "batch_first",
    "num_embeddings", "embedding_dim", "inplace", "p", "mode", "scale_factor", "output_size",
    "input_size", "hidden_size", "num_layers", "bidirectional", "proj_size", "bias",
)


def module_attrs(m: nn.Module) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for name in _MODULE_ATTRS:
        if hasattr(m, name):
            v = _jsonable(getattr(m, name))
            if v is not None:
                attrs[name] = v
    if "elementwise_affine" in attrs:
        attrs["affine"] = attrs["elementwise_affine"]
    if isinstance(m, nn.MultiheadAttention):
        attrs["bias"] = m.in_proj_bias is not None
    return attrs


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


def call_attrs(kind: str, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Attributes a formula needs from a functional call's non-tensor arguments."""
    attrs: dict[str, Any] = {}
    if kind in ("max_pool", "avg_pool"):
        attrs["kernel_size"] = _jsonable(_arg(args, kwargs, 1, "kernel_size"))
    elif kind == "sdpa":
        attrs["is_causal"] = bool(_arg(args, kwargs, 5, "is_causal"))
    elif kind == "einsum":
        attrs["equation"] = args[0] if args and isinstance(args[0], str) else kwargs.get("equation")
    elif kind in ("layer_norm", "group_norm"):
        w = _arg(args, kwargs, 2, "weight")
        attrs["affine"] = w is not None
    elif kind == "interpolate":  # F.interpolate(input, size, scale_factor, mode, ...)
        mode = _arg(args, kwargs, 3, "mode")  # None: F.interpolate's default (nearest), or an aten op named by its mode
        attrs["mode"] = mode if isinstance(mode, str) else None
    return {k: v for k, v in attrs.items() if v is not None}


def source_location(stack_trace: str | None) -> SourceLocation | None:
    """The innermost frame of the user's code (outside torch) in a recorded stack trace."""
    if not stack_trace:
        return None
    lines = stack_trace.splitlines()
    best: SourceLocation | None = None
    for i, line in enumerate(lines):
        m = _FRAME_RE.search(line)
        if not m:
            continue
        file = m.group("file")
        if file.startswith("<") or file.startswith(_TORCH_DIR):
            continue
        code = lines[i + 1].strip() if i + 1 < len(lines) and not _FRAME_RE.search(lines[i + 1]) else ""
        best = SourceLocation(file, int(m.group("line")), m.group("func"), code)
    return best


def module_stack(node: fx.Node) -> list[tuple[str, str, str]]:
    """[(key, path, class name)] outermost first, root excluded."""
    stack = node.meta.get("nn_module_stack") or {}
    out = []
    for key, (path, cls) in stack.items():
        if path == "":
            continue
        cls_name = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
        out.append((key, path, cls_name))
    return out


# --------------------------------------------------------------------------- recording run
@dataclass
class NodeRecord:
    node: fx.Node
    in_shapes: list[tuple[str, TensorMeta]]  # (producer node name, meta) per tensor arg, before the op ran
    outputs: list[TensorMeta]
    is_tensor: bool  # the node's value is one tensor (not a tuple/list/dict of them)
    aliases_input: bool


class _Recorder(fx.Interpreter):
    """Runs the graph once and keeps the shapes of what each node consumed and produced; values
    are freed after their last use, as in an eager run, so capture needs the peak of live
    activations, not their sum."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.records: dict[str, NodeRecord] = {}

    def run_node(self, n: fx.Node) -> Any:
        checkpoint()
        inputs: list[tuple[str, torch.Tensor]] = []

        def grab(a: fx.Node) -> fx.Node:
            for t in tensors_of(self.env[a]):
                inputs.append((a.name, t))
            return a

        fx.node.map_arg((n.args, n.kwargs), grab)
        in_shapes = [(src, tensor_meta(t)) for src, t in inputs]  # taken before an in-place op runs
        in_ptrs = {storage_ptr(t) for _, t in inputs}
        try:
            value = super().run_node(n)
        except Exception as exc:
            raise NodeFailure(n, exc) from exc
        outs = tensors_of(value)
        aliases = bool(outs) and all(storage_ptr(t) in in_ptrs for t in outs)
        self.records[n.name] = NodeRecord(n, in_shapes, [tensor_meta(t) for t in outs], isinstance(value, torch.Tensor), aliases)
        return value


def record_nodes(gm: fx.GraphModule, inputs: Sequence[torch.Tensor], layer_of: Callable[[fx.Node], str]) -> dict[str, NodeRecord]:
    rec = _Recorder(gm)
    try:
        with torch.inference_mode():
            rec.run(*inputs)
    except NodeFailure as f:
        first = first_line(f.exc)
        raise InputSpecError(
            f"Running the captured graph on inputs [{shape_text(inputs)}] failed at layer "
            f"'{layer_of(f.node)}' ({target_name(f.node.target)}): {first}"
        ) from f
    return rec.records
