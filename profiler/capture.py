"""Capture a model's graph into a ``LayerGraph``: torch.fx first, torch.export as the fallback.

Both paths give a runnable ``torch.fx.GraphModule`` plus a map from graph node to layer id, so
the same timing code serves both. Leaf modules (torch.nn modules without children, plus
``nn.MultiheadAttention``) are one layer each; in the export graph their aten ops are grouped
back under the module by ``nn_module_stack``. Shapes, dtypes and aliasing come from one real run
on the example inputs, not from guesses.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .errors import Cancelled, CaptureError, InputSpecError, ProfilingError, describe, first_line
from .graph import CaptureMethod, Layer, LayerGraph, SourceLocation, TensorMeta, TensorRole
from .opkinds import LEAF_MODULES_WITH_CHILDREN, VIEW_KINDS, aten_kind, class_name_kind, function_kind, method_kind, module_kind, target_name
from .progress import checkpoint
from .resources import untouched
from .weights import storage_key

__all__ = ["CaptureResult", "capture", "capture_exported", "input_error", "is_leaf_module", "run_and_locate_failure"]

log = logging.getLogger(__name__)
_CALL_SUFFIX = re.compile(r"@(\d+)$")

_TORCH_DIR = os.path.dirname(torch.__file__)
_FRAME_RE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')


@contextlib.contextmanager
def quiet_torch_logs():
    """torch.export logs warnings and prints a partial graph to stderr on failure; the
    CaptureError we raise says what matters (and names the user's line)."""
    names = ["torch"] + [n for n in logging.root.manager.loggerDict if n.startswith("torch.")]
    loggers = [logging.getLogger(n) for n in names]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, old, strict=True):
            lg.setLevel(level)


@dataclass
class CaptureResult:
    graph: LayerGraph
    graph_module: fx.GraphModule | None  # runnable, node names match node_layer keys; None for an eager capture (shapes only)
    node_layer: dict[str, str]  # fx node name -> layer id (glue nodes absent)
    method: CaptureMethod
    notes: list[str] = field(default_factory=list)  # e.g. why fx failed when export was used

    def runnable(self) -> fx.GraphModule:
        """The graph to run (timing, recording activations); an eager capture has none."""
        if self.graph_module is None:
            raise ProfilingError(f"A {self.method.value} capture records shapes only and cannot be run or timed; "
                                 "capture with fx or export.")
        return self.graph_module


def is_leaf_module(m: nn.Module) -> bool:
    """A module that stays one layer: a torch.nn module without children, or one with a formula."""
    if isinstance(m, LEAF_MODULES_WITH_CHILDREN):
        return True
    if isinstance(m, nn.Sequential | nn.ModuleList | nn.ModuleDict):
        return False
    return next(m.children(), None) is None and type(m).__module__.startswith(("torch.nn", "torch.ao.nn"))


class _LeafTracer(fx.Tracer):
    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        checkpoint()  # once per module call while tracing: Cancel does not wait for a 10,000-module trace
        return is_leaf_module(m)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _meta(t: torch.Tensor, role: TensorRole = TensorRole.ACTIVATION, name: str = "") -> TensorMeta:
    return TensorMeta(tuple(int(s) for s in t.shape), _dtype_name(t.dtype), role, name)


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [v for item in value for v in _tensors(item)]
    if isinstance(value, dict):
        return [v for item in value.values() for v in _tensors(item)]
    return []


def _storage_ptr(t: torch.Tensor) -> int:
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


def _module_attrs(m: nn.Module) -> dict[str, Any]:
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


def _call_attrs(kind: str, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
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


def _source(stack_trace: str | None) -> SourceLocation | None:
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


def _module_stack(node: fx.Node) -> list[tuple[str, str, str]]:
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
class _NodeRecord:
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
        self.records: dict[str, _NodeRecord] = {}

    def run_node(self, n: fx.Node) -> Any:
        checkpoint()
        inputs: list[tuple[str, torch.Tensor]] = []

        def grab(a: fx.Node) -> fx.Node:
            for t in _tensors(self.env[a]):
                inputs.append((a.name, t))
            return a

        fx.node.map_arg((n.args, n.kwargs), grab)
        in_shapes = [(src, _meta(t)) for src, t in inputs]  # taken before an in-place op runs
        in_ptrs = {_storage_ptr(t) for _, t in inputs}
        try:
            value = super().run_node(n)
        except Exception as exc:
            raise _NodeFailure(n, exc) from exc
        outs = _tensors(value)
        aliases = bool(outs) and all(_storage_ptr(t) in in_ptrs for t in outs)
        self.records[n.name] = _NodeRecord(n, in_shapes, [_meta(t) for t in outs], isinstance(value, torch.Tensor), aliases)
        return value


class _NodeFailure(Exception):
    def __init__(self, node: fx.Node, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.node, self.exc = node, exc


def _shape_text(inputs: Sequence[torch.Tensor]) -> str:
    return ", ".join(f"{tuple(t.shape)} {_dtype_name(t.dtype)}" for t in inputs)


def input_error(inputs: Sequence[torch.Tensor], layer: str | None, cls: str, exc: BaseException, hint: str = "") -> InputSpecError:
    """The error of a forward that failed in ``layer`` (a module path; None: the top-level forward, outside
    every submodule: pre/post-processing, where ``hint`` says how to profile a part)."""
    return InputSpecError(
        f"Running the model on inputs [{_shape_text(inputs)}] failed in layer '{layer or '(top-level forward)'}' ({cls}): "
        f"{first_line(exc)}. Check --input-shape/--dtype: the model may expect another input.{hint}"
    )


def run_and_locate_failure(model: nn.Module, inputs: Sequence[torch.Tensor]) -> Any:
    """Run the model eagerly; on failure raise InputSpecError naming the innermost module."""
    stack: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def pre(mod: nn.Module, _args: Any) -> None:
        stack.append(names.get(mod, "?"))

    def post(_mod: nn.Module, _args: Any, _out: Any) -> None:
        if stack:
            stack.pop()

    for m in names:
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        with untouched(model), torch.no_grad():
            return model(*inputs)
    except Exception as exc:
        where = [s for s in stack if s]
        cls = type(model.get_submodule(where[-1])).__name__ if where else type(model).__name__
        raise input_error(inputs, where[-1] if where else None, cls, exc, "" if where else _submodule_hint(model, run=True)) from exc
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------- layer assembly
@dataclass
class _Assignment:
    layer_id: str
    kind: str
    target: str
    module_path: str | None
    module_type: str | None
    parents: tuple[str, ...]
    attrs: dict[str, Any]
    module: nn.Module | None
    stack_trace: str | None


def _unique(base: str, taken: set[str]) -> str:
    uid, n = base, 2
    while uid in taken:
        uid, n = f"{base}~{n}", n + 1
    return uid


def _assemble(
    graph: fx.Graph,
    model: nn.Module,
    records: dict[str, _NodeRecord],
    assign: dict[str, _Assignment],
) -> tuple[LayerGraph, dict[str, str]]:
    """One Layer per assigned group of fx nodes, with operands, outputs and the edges between layers."""
    asm = _Assembler(graph, model, records, assign)
    layers = [asm.layer(layer_id, nodes) for layer_id, nodes in asm.members().items()]
    return LayerGraph(tuple(layers), tuple(asm.edges), tuple(asm.input_layers), tuple(asm.output_layers)), asm.node_layer


class _Assembler:
    """State shared while turning fx nodes into layers: who produced each value, and the edges,
    input layers and output layers found so far (dicts used as ordered sets)."""

    def __init__(self, graph: fx.Graph, model: nn.Module, records: dict[str, _NodeRecord],
                 assign: dict[str, _Assignment]) -> None:
        self.graph, self.records, self.assign = graph, records, assign
        self.param_names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
        self.first_name: dict[tuple[str, int], str] = {}  # storage -> the name it was first registered under
        for n, t in (*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)):
            self.first_name.setdefault(storage_key(t), n)
        self.node_layer = {name: a.layer_id for name, a in assign.items()}
        self.by_name = {n.name: n for n in graph.nodes}
        out_node = next(n for n in graph.nodes if n.op == "output")
        self.graph_outputs = {a.name for a in out_node.all_input_nodes}
        self.edges: dict[tuple[str, str], None] = {}
        self.input_layers: dict[str, None] = {}
        self.output_layers: dict[str, None] = {}

    def members(self) -> dict[str, list[fx.Node]]:
        out: dict[str, list[fx.Node]] = {}
        for n in self.graph.nodes:
            checkpoint()
            if n.name in self.node_layer:
                out.setdefault(self.node_layer[n.name], []).append(n)
        return out

    def producers(self, src: str, seen: set[str] | None = None) -> list[str]:
        """Layer ids (or 'input:<name>') that a value comes from, looking through glue nodes."""
        if src in self.node_layer:
            return [self.node_layer[src]]
        node = self.by_name.get(src)
        if node is None or node.op == "get_attr":
            return []
        if node.op == "placeholder":
            return [f"input:{src}"]
        seen = seen or set()
        if src in seen:
            return []
        seen.add(src)
        return [p for a in node.all_input_nodes for p in self.producers(a.name, seen)]

    def _link(self, src: str, layer_id: str) -> None:
        for p in self.producers(src):
            if p.startswith("input:"):
                self.input_layers.setdefault(layer_id, None)
            elif p != layer_id:
                self.edges.setdefault((p, layer_id), None)

    def operands(self, layer_id: str, nodes: list[fx.Node], a: _Assignment) -> list[TensorMeta]:
        """Tensors the layer reads from outside itself (linking their producers), then its module's weights."""
        names = {n.name for n in nodes}
        out: list[TensorMeta] = []
        seen_inputs: set[tuple[str, int]] = set()
        for n in nodes:
            rec = self.records.get(n.name)
            for idx, (src, meta) in enumerate(rec.in_shapes if rec else ()):
                if src in names or (src, idx) in seen_inputs:
                    continue
                seen_inputs.add((src, idx))
                prod = self.by_name[src]
                if prod.op != "get_attr":
                    out.append(meta)
                    self._link(src, layer_id)
                elif a.module is None:  # a module's weights come from the module itself, below
                    role = TensorRole.PARAMETER if prod.target in self.param_names else TensorRole.BUFFER
                    out.append(TensorMeta(meta.shape, meta.dtype, role, str(prod.target)))
        if a.module is not None:
            out += [self.weight(p, TensorRole.PARAMETER, f"{a.module_path}.{name}") for name, p in a.module.named_parameters()]
            out += [self.weight(b, TensorRole.BUFFER, f"{a.module_path}.{name}") for name, b in a.module.named_buffers()]
        return out

    def weight(self, t: torch.Tensor, role: TensorRole, name: str) -> TensorMeta:
        first = self.first_name.get(storage_key(t), name)
        return TensorMeta(tuple(int(s) for s in t.shape), _dtype_name(t.dtype), role, name, first if first != name else "")

    def outputs(self, layer_id: str, nodes: list[fx.Node]) -> list[TensorMeta]:
        """Values used outside the layer (all of a one-node layer's); marks the model's output layers."""
        names = {n.name for n in nodes}
        out: list[TensorMeta] = []
        for n in nodes:
            rec = self.records.get(n.name)
            used_outside = n.name in self.graph_outputs or any(u.name not in names for u in n.users)
            if rec is not None and (used_outside or len(nodes) == 1):
                out += rec.outputs
            if n.name in self.graph_outputs or any(_reaches_output(u, self.node_layer) for u in n.users):
                self.output_layers.setdefault(layer_id, None)
        return out

    def layer(self, layer_id: str, nodes: list[fx.Node]) -> Layer:
        a = self.assign[nodes[0].name]
        operands = self.operands(layer_id, nodes, a)
        outputs = self.outputs(layer_id, nodes)
        is_view = a.kind in VIEW_KINDS and all(self.records[n.name].aliases_input for n in nodes if n.name in self.records)
        return Layer(id=layer_id, op_kind=a.kind, target=a.target, module_path=a.module_path, module_type=a.module_type,
                     parents=a.parents, source=_source(a.stack_trace), operands=tuple(operands), outputs=tuple(outputs),
                     attrs=a.attrs, is_view=is_view, fx_nodes=tuple(n.name for n in nodes))


def _reaches_output(n: fx.Node, node_layer: dict[str, str]) -> bool:
    """``n`` is the output, or glue (e.g. getitem on a tuple) whose value flows into it."""
    if n.op == "output":
        return True
    if n.name in node_layer:
        return False
    return any(_reaches_output(u, node_layer) for u in n.users)


def _is_tuple_getitem(n: fx.Node, records: dict[str, _NodeRecord]) -> bool:
    import operator

    if n.op != "call_function" or n.target is not operator.getitem:
        return False
    src = n.args[0]
    return isinstance(src, fx.Node) and src.name in records and not records[src.name].is_tensor


# --------------------------------------------------------------------------- fx path
def _assign_fx(graph: fx.Graph, model: nn.Module, records: dict[str, _NodeRecord]) -> dict[str, _Assignment]:
    assign: dict[str, _Assignment] = {}
    taken: set[str] = set()
    calls: dict[str, int] = {}
    for n in graph.nodes:
        checkpoint()
        if n.op not in ("call_module", "call_function", "call_method") or n.name not in records:
            continue
        rec = records[n.name]
        stack = _module_stack(n)
        if n.op == "call_module":
            path = str(n.target)
            mod = model.get_submodule(path)
            k = calls.get(path, 0)
            calls[path] = k + 1
            layer_id = _unique(path if k == 0 else f"{path}:{k}", taken)
            parents = tuple(p for _, p, _ in stack if p != path)
            if not parents:
                parents = tuple(".".join(path.split(".")[:i]) for i in range(1, path.count(".") + 1))
            cls = type(mod)
            a = _Assignment(layer_id, module_kind(mod), f"{cls.__module__}.{cls.__qualname__}", path,
                            f"{cls.__module__}.{cls.__qualname__}", parents, _module_attrs(mod), mod,
                            n.meta.get("stack_trace"))
        else:
            if not rec.outputs or _is_tuple_getitem(n, records):
                continue  # glue: shape queries, tuple unpacking
            kind = function_kind(n.target) if n.op == "call_function" else method_kind(str(n.target))
            parents = tuple(p for _, p, _ in stack)
            base = f"{parents[-1]}.{n.name}" if parents else n.name
            layer_id = _unique(base, taken)
            a = _Assignment(layer_id, kind, target_name(n.target), None, None, parents,
                            _call_attrs(kind, n.args, n.kwargs), None, n.meta.get("stack_trace"))
        taken.add(a.layer_id)
        assign[n.name] = a
    return assign


# --------------------------------------------------------------------------- export path
def _export_kind(n: fx.Node) -> str:
    kind = aten_kind(n.target)
    if kind == "unknown" and getattr(n.target, "__name__", "").startswith("convolution"):
        kind = "conv_transpose" if (len(n.args) > 6 and n.args[6]) else "conv"
    return kind


def _assign_export(gm: fx.GraphModule, model: nn.Module | None, records: dict[str, _NodeRecord]) -> dict[str, _Assignment]:
    """Group aten nodes under their leaf module. ``model`` is the original module when we have it;
    for a loaded .pt2 it is None and the leaf class comes from nn_module_stack's class name."""
    assign: dict[str, _Assignment] = {}
    taken: set[str] = set()
    group_ids: dict[str, str] = {}
    group_attrs: dict[str, dict[str, Any]] = {}
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.name not in records or _is_tuple_getitem(n, records):
            continue
        stack = _module_stack(n)
        if stack:
            key, path, cls_name = stack[-1]
            mod = None
            if model is not None:
                with contextlib.suppress(AttributeError):
                    mod = model.get_submodule(path)
            kind = module_kind(mod) if mod is not None and is_leaf_module(mod) else None
            if mod is None:
                kind = class_name_kind(cls_name)
            if kind is not None:
                if key not in group_ids:
                    repeat = _CALL_SUFFIX.search(key)  # export's key of the n-th call: "path@n" ('@' is legal in a name too)
                    call = int(repeat.group(1)) if repeat else 0
                    group_ids[key] = _unique(path if call == 0 else f"{path}:{call}", taken)
                    taken.add(group_ids[key])
                if mod is not None:
                    attrs = _module_attrs(mod)
                else:  # no module object (.pt2): read the attrs off the group's main aten call
                    attrs = group_attrs.setdefault(key, {})
                    if _export_kind(n) == kind:
                        attrs.update(_call_attrs(kind, n.args, n.kwargs))
                assign[n.name] = _Assignment(group_ids[key], kind, cls_name, path, cls_name,
                                             tuple(p for _, p, _ in stack[:-1]), attrs, mod, n.meta.get("stack_trace"))
                continue
        if not records[n.name].outputs:
            continue
        kind = _export_kind(n)
        parents = tuple(p for _, p, _ in stack)
        layer_id = _unique(f"{parents[-1]}.{n.name}" if parents else n.name, taken)
        taken.add(layer_id)
        assign[n.name] = _Assignment(layer_id, kind, target_name(n.target), None, None, parents,
                                     _call_attrs(kind, n.args, n.kwargs), None, n.meta.get("stack_trace"))
    return assign


def _record(gm: fx.GraphModule, inputs: Sequence[torch.Tensor], layer_of: Callable[[fx.Node], str]) -> dict[str, _NodeRecord]:
    rec = _Recorder(gm)
    try:
        with torch.inference_mode():
            rec.run(*inputs)
    except _NodeFailure as f:
        first = first_line(f.exc)
        raise InputSpecError(
            f"Running the captured graph on inputs [{_shape_text(inputs)}] failed at layer "
            f"'{layer_of(f.node)}' ({target_name(f.node.target)}): {first}"
        ) from f
    return rec.records


def _node_label(n: fx.Node) -> str:
    stack = _module_stack(n)
    if n.op == "call_module":
        return str(n.target)
    return f"{stack[-1][1]}.{n.name}" if stack else n.name


def capture_exported(ep: torch.export.ExportedProgram, model: nn.Module | None, inputs: Sequence[torch.Tensor],
                     notes: list[str] | None = None) -> CaptureResult:
    """Layer graph of an ExportedProgram (from torch.export or a loaded .pt2)."""
    gm = ep.module()
    records = _record(gm, inputs, _node_label)
    assign = _assign_export(gm, model, records)
    graph, node_layer = _assemble(gm.graph, model if model is not None else gm, records, assign)
    return CaptureResult(graph, gm, node_layer, CaptureMethod.EXPORT, list(notes or []))


def _trace_once(model: nn.Module) -> fx.GraphModule:
    with untouched(model):  # a trace runs forward() on Proxies: what it caches on the model must not stay
        return fx.GraphModule(model, _LeafTracer().trace(model), class_name=type(model).__name__)


def _fx_trace(model: nn.Module, forced: bool) -> tuple[fx.GraphModule, list[str]]:
    """fx's graph of ``model``, traced through library functions registered with ``torch.fx.wrap`` (torchvision
    Swin's attention would otherwise be one node of unknown work). When tracing inside them fails, raises
    ``_Opaque`` (export may see inside), or with ``forced`` (--capture fx) keeps them whole and says so."""
    gm = _trace_once(model)
    opaque = _opaque_calls(gm.graph)
    if not opaque:
        return gm, []
    names = ", ".join(opaque[:3])
    try:
        with _fx_wrap_off():
            return _trace_once(model), [f"traced through {len(opaque)} torch.fx.wrap'ed function(s) ({names}) to count their work"]
    except Cancelled:
        raise
    except Exception as exc:
        if not forced:
            raise _Opaque(opaque, exc) from exc
        return gm, [f"{len(opaque)} torch.fx.wrap'ed function(s) stay single layers of unknown work ({names}): "
                    f"tracing inside them failed ({describe(exc)})"]


class _Opaque(Exception):
    def __init__(self, names: list[str], exc: BaseException) -> None:
        super().__init__(", ".join(names))
        self.names, self.exc = names, exc


def _opaque_calls(graph: fx.Graph) -> list[str]:
    """Python functions outside torch that fx kept as one node (``torch.fx.wrap``) and that have no formula."""
    out = []
    for n in graph.nodes:
        if n.op != "call_function" or not isinstance(n.target, types.FunctionType) or function_kind(n.target) != "unknown":
            continue
        mod = getattr(n.target, "__module__", "") or ""
        if mod in ("torch", "_operator", "operator", "builtins", "math") or mod.startswith("torch."):
            continue
        name = f"{mod}.{n.target.__qualname__}"
        if name not in out:
            out.append(name)
    return out


@contextlib.contextmanager
def _fx_wrap_off() -> Iterator[None]:
    """Trace into functions registered with ``torch.fx.wrap`` (fx patches each into a leaf while tracing)."""
    from torch.fx import _symbolic_trace

    saved = dict(_symbolic_trace._wrapped_fns_to_patch)
    _symbolic_trace._wrapped_fns_to_patch.clear()
    try:
        yield
    finally:
        _symbolic_trace._wrapped_fns_to_patch.update(saved)


def _submodule_hint(model: nn.Module, run: bool = False) -> str:
    """For a model whose pre/post-processing blocks tracing or running (detection: anchors, NMS): the parts to try."""
    sizes = sorted(((sum(p.numel() for p in m.parameters()), n) for n, m in model.named_children()), reverse=True)
    parts = [n for size, n in sizes if size][:4]
    if not parts:
        return ""
    largest = f" (largest parts: {', '.join(parts)})" if len(parts) > 1 else ""
    if run:
        return f" If it failed in pre/post-processing, work on a part: --submodule {parts[0]}{largest}."
    return (f" A static profile records one eager forward and needs no tracing (--static); or work on a part without the "
            f"pre/post-processing: --submodule {parts[0]}{largest}.")


_BREAKS_CODEGEN = re.compile(r'["\\\n\r\x00]')


def _check_names(model: nn.Module) -> None:
    """torch.fx and torch.export write module, parameter and buffer names into the Python code they generate
    (``getattr(self.blocks, "<name>")``) without escaping them: a name with a quote, a backslash, a line break or
    a NUL (legal as an ``nn.ModuleDict`` key) breaks that code. One clean error naming it."""
    names = [n for n, _ in model.named_modules()] + [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    bad = next((n for n in names if _BREAKS_CODEGEN.search(n)), None)
    if bad is not None:
        raise CaptureError(f"The model has a module or weight named {bad!r}: torch.fx and torch.export write such names into the "
                           f"code they generate without quoting, which breaks it. Rename it (a quote, backslash, line break or "
                           f"NUL in an nn.ModuleDict key), or profile without tracing: --static records the graph "
                           f"from one eager forward and takes any name.")


def capture(model: nn.Module, inputs: Sequence[torch.Tensor], method: CaptureMethod | None = None) -> CaptureResult:
    """Capture ``model`` on ``inputs``; fx first, export if fx cannot trace (or as asked)."""
    _check_names(model)
    fx_error: str | None = None
    if method in (None, CaptureMethod.FX):
        try:
            gm, fx_notes = _fx_trace(model, forced=method is CaptureMethod.FX)
        except Cancelled:
            raise
        except _Opaque as exc:
            fx_error = (f"it calls {len(exc.names)} torch.fx.wrap'ed function(s) whose work fx cannot see "
                        f"({', '.join(exc.names[:3])}), and tracing inside them failed ({describe(exc.exc)})")
            log.info("torch.fx: %s", fx_error)
        except Exception as exc:
            fx_error = f"{describe(exc)}"
            log.info("torch.fx could not trace %s (%s)", type(model).__name__, fx_error, exc_info=log.isEnabledFor(logging.DEBUG))
            if method is CaptureMethod.FX:
                raise CaptureError(f"torch.fx could not trace {type(model).__name__}: {fx_error}") from exc
        else:
            with untouched(model):
                records = _record(gm, inputs, _node_label)
            assign = _assign_fx(gm.graph, model, records)
            layer_graph, node_layer = _assemble(gm.graph, model, records, assign)
            log.info("captured %s with torch.fx: %d layers from %d fx nodes", type(model).__name__, len(layer_graph), len(gm.graph.nodes))
            return CaptureResult(layer_graph, gm, node_layer, CaptureMethod.FX, fx_notes)
    try:
        with torch.inference_mode(False), quiet_torch_logs(), untouched(model):
            ep = torch.export.export(model, tuple(inputs), strict=False)
    except Cancelled:
        raise
    except Exception as exc:
        text = str(exc).strip()
        export_error = describe(exc)
        parts = [f"torch.fx: {fx_error}"] if fx_error else []
        parts.append(f"torch.export: {export_error}")
        where = _source(text)
        at = f" The blocking code is at {where}: `{where.code}`." if where else ""
        raise CaptureError(
            f"Could not capture {type(model).__name__}'s graph. " + " | ".join(parts) + "." + at
            + " Data-dependent Python control flow (if/while on tensor values) blocks both; "
            "move it out of forward() or make it a tensor op (torch.where)." + _submodule_hint(model)
        ) from exc
    notes = [f"torch.fx could not trace the model ({fx_error}); used torch.export."] if fx_error else []
    log.info("captured %s with torch.export", type(model).__name__)
    return capture_exported(ep, model, inputs, notes)
