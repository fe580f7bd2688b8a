"""From recorded nodes to layers: which fx/export node belongs to which layer (leaf modules stay one
layer, functions and methods get their own, glue joins its neighbours), and the ``LayerGraph`` built
from that assignment."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..graph import Layer, LayerGraph, TensorMeta, TensorRole, dtype_name
from ..progress import checkpoint
from .opkinds import LEAF_MODULES_WITH_CHILDREN, VIEW_KINDS, aten_kind, class_name_kind, function_kind, method_kind, module_kind, target_name
from .record import NodeRecord, call_attrs, module_attrs, module_stack, source_location
from .weights import storage_key

__all__ = ["Assignment", "assemble", "assign_fx", "assign_export", "is_leaf_module"]

_CALL_SUFFIX = re.compile(r"@(\d+)$")


def is_leaf_module(m: nn.Module) -> bool:
    """A module that stays one layer: a torch.nn module without children, or one with a formula."""
    if isinstance(m, LEAF_MODULES_WITH_CHILDREN):
        return True
    if isinstance(m, nn.Sequential | nn.ModuleList | nn.ModuleDict):
        return False
    return next(m.children(), None) is None and type(m).__module__.startswith(("torch.nn", "torch.ao.nn"))


@dataclass
class Assignment:
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


def assemble(
    graph: fx.Graph,
    model: nn.Module,
    records: dict[str, NodeRecord],
    assign: dict[str, Assignment],
) -> tuple[LayerGraph, dict[str, str]]:
    """One Layer per assigned group of fx nodes, with operands, outputs and the edges between layers."""
    asm = _Assembler(graph, model, records, assign)
    layers = [asm.layer(layer_id, nodes) for layer_id, nodes in asm.members().items()]
    return LayerGraph(tuple(layers), tuple(asm.edges), tuple(asm.input_layers), tuple(asm.output_layers)), asm.node_layer


class _Assembler:
    """State shared while turning fx nodes into layers: who produced each value, and the edges,
    input layers and output layers found so far (dicts used as ordered sets)."""

    def __init__(self, graph: fx.Graph, model: nn.Module, records: dict[str, NodeRecord],
                 assign: dict[str, Assignment]) -> None:
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

    def operands(self, layer_id: str, nodes: list[fx.Node], a: Assignment) -> list[TensorMeta]:
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
        return TensorMeta(tuple(int(s) for s in t.shape), dtype_name(t.dtype), role, name, first if first != name else "")

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
                     parents=a.parents, source=source_location(a.stack_trace), operands=tuple(operands), outputs=tuple(outputs),
                     attrs=a.attrs, is_view=is_view, fx_nodes=tuple(n.name for n in nodes))


def _reaches_output(n: fx.Node, node_layer: dict[str, str]) -> bool:
    """``n`` is the output, or glue (e.g. getitem on a tuple) whose value flows into it."""
    if n.op == "output":
        return True
    if n.name in node_layer:
        return False
    return any(_reaches_output(u, node_layer) for u in n.users)


def _is_tuple_getitem(n: fx.Node, records: dict[str, NodeRecord]) -> bool:
    import operator

    if n.op != "call_function" or n.target is not operator.getitem:
        return False
    src = n.args[0]
    return isinstance(src, fx.Node) and src.name in records and not records[src.name].is_tensor


# --------------------------------------------------------------------------- fx path
def assign_fx(graph: fx.Graph, model: nn.Module, records: dict[str, NodeRecord]) -> dict[str, Assignment]:
    assign: dict[str, Assignment] = {}
    taken: set[str] = set()
    calls: dict[str, int] = {}
    for n in graph.nodes:
        checkpoint()
        if n.op not in ("call_module", "call_function", "call_method") or n.name not in records:
            continue
        rec = records[n.name]
        stack = module_stack(n)
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
            a = Assignment(layer_id, module_kind(mod), f"{cls.__module__}.{cls.__qualname__}", path,
                            f"{cls.__module__}.{cls.__qualname__}", parents, module_attrs(mod), mod,
                            n.meta.get("stack_trace"))
        else:
            if not rec.outputs or _is_tuple_getitem(n, records):
                continue  # glue: shape queries, tuple unpacking
            kind = function_kind(n.target) if n.op == "call_function" else method_kind(str(n.target))
            parents = tuple(p for _, p, _ in stack)
            base = f"{parents[-1]}.{n.name}" if parents else n.name
            layer_id = _unique(base, taken)
            a = Assignment(layer_id, kind, target_name(n.target), None, None, parents,
                            call_attrs(kind, n.args, n.kwargs), None, n.meta.get("stack_trace"))
        taken.add(a.layer_id)
        assign[n.name] = a
    return assign


# --------------------------------------------------------------------------- export path
def _export_kind(n: fx.Node) -> str:
    kind = aten_kind(n.target)
    if kind == "unknown" and getattr(n.target, "__name__", "").startswith("convolution"):
        kind = "conv_transpose" if (len(n.args) > 6 and n.args[6]) else "conv"
    return kind


def assign_export(gm: fx.GraphModule, model: nn.Module | None, records: dict[str, NodeRecord]) -> dict[str, Assignment]:
    """Group aten nodes under their leaf module. ``model`` is the original module when we have it;
    for a loaded .pt2 it is None and the leaf class comes from nn_module_stack's class name."""
    assign: dict[str, Assignment] = {}
    taken: set[str] = set()
    group_ids: dict[str, str] = {}
    group_attrs: dict[str, dict[str, Any]] = {}
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.name not in records or _is_tuple_getitem(n, records):
            continue
        stack = module_stack(n)
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
                    attrs = module_attrs(mod)
                else:  # no module object (.pt2): read the attrs off the group's main aten call
                    attrs = group_attrs.setdefault(key, {})
                    if _export_kind(n) == kind:
                        attrs.update(call_attrs(kind, n.args, n.kwargs))
                assign[n.name] = Assignment(group_ids[key], kind, cls_name, path, cls_name,
                                             tuple(p for _, p, _ in stack[:-1]), attrs, mod, n.meta.get("stack_trace"))
                continue
        if not records[n.name].outputs:
            continue
        kind = _export_kind(n)
        parents = tuple(p for _, p, _ in stack)
        layer_id = _unique(f"{parents[-1]}.{n.name}" if parents else n.name, taken)
        taken.add(layer_id)
        assign[n.name] = Assignment(layer_id, kind, target_name(n.target), None, None, parents,
                                     call_attrs(kind, n.args, n.kwargs), None, n.meta.get("stack_trace"))
    return assign
