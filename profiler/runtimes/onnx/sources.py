"""ONNX node -> PyTorch layers, from the exporter's metadata (name scopes, fx node, rewrite rule, stack
trace); nodes with no source of their own take their nearest mapped neighbour and say so."""

from __future__ import annotations

import ast
import collections
import dataclasses
import re
import types
from pathlib import Path
from typing import Any

import torch

from ...capture.opkinds import aten_kind
from ...graph import LayerGraph
from .results import MatchHow, OnnxNodeSource

__all__ = ["source_map"]


def _meta(node) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def _scopes(meta: dict[str, str]) -> list[str] | None:
    raw = meta.get("pkg.torch.onnx.name_scopes")
    if not raw:
        return None
    try:
        val = ast.literal_eval(raw)
        return [str(v) for v in val] if isinstance(val, (list, tuple)) else None
    except (ValueError, SyntaxError):
        return None


_FX_TARGET_RE = re.compile(r"target=torch\.ops\.(aten\.[A-Za-z_0-9]+\.[A-Za-z_0-9]+)")
_STACK_RE = re.compile(r'File "([^"]+)", line (\d+)')


def _user_line(meta: dict[str, str]) -> str:
    trace = meta.get("pkg.torch.onnx.stack_trace", "")
    torch_dir = str(Path(torch.__file__).parent)
    frames = [(f, n) for f, n in _STACK_RE.findall(trace) if not f.startswith(torch_dir) and not f.startswith("<")]
    return f"{frames[-1][0]}:{frames[-1][1]}" if frames else ""


def _fx_kind(meta: dict[str, str]) -> str:
    m = _FX_TARGET_RE.search(meta.get("pkg.torch.onnx.fx_node", ""))
    if not m:
        return "unknown"
    return aten_kind(types.SimpleNamespace(__name__=m.group(1).split(".", 1)[1]))  # "conv2d.default"


_KIND_ALIASES = {"adaptive_avg_pool": {"reduce"}, "reduce": {"adaptive_avg_pool"}, "linear": {"matmul", "addmm"},
                 "matmul": {"linear"}, "identity": {"view"}, "view": {"identity"}}


def source_map(model, graph: LayerGraph | None) -> dict[str, OnnxNodeSource]:
    """Where every node of an exported ONNX model comes from."""
    nodes = list(model.graph.node)
    if graph is None:
        return {n.name: OnnxNodeSource(n.name, n.op_type, (), MatchHow.ONNX_NODE) for n in nodes}
    match = _Matcher(graph)
    out: dict[str, OnnxNodeSource] = {}
    for n in nodes:
        meta = _meta(n)
        scopes = _scopes(meta)
        layer_ids: tuple[str, ...] = ()
        how = MatchHow.UNMAPPED
        if scopes and len(scopes) >= 2:
            layer_ids, how = match.scoped(scopes[-1], scopes[-2], meta)
        elif n.name.startswith("/"):  # TorchScript exporter: /layer1/layer1.0/conv1/Conv, /encoder/block.0/layer.1/wo/MatMul
            layer_ids, how = match.torchscript(n)
        out[n.name] = OnnxNodeSource(n.name, n.op_type, layer_ids, how, _user_line(meta), tuple(scopes or ()),
                                     meta.get("pkg.torch.onnx.class_hierarchy", ""), meta.get("pkg.torch.onnx.fx_node", ""),
                                     meta.get("pkg.onnxscript.rewriter.rule_name", ""))
    _fill_nearest(nodes, out)
    return out


class _Matcher:
    """ONNX node -> layer ids: module calls by scope (told apart by call order), functional ops by parent
    module, kind and order, each functional layer taken once."""

    def __init__(self, graph: LayerGraph) -> None:
        self.graph = graph
        self.by_path: dict[str, list[str]] = collections.defaultdict(list)  # module path -> layer ids by call
        self.functional: dict[str, list[str]] = collections.defaultdict(list)  # parent path -> functional layer ids
        for layer in graph:
            if layer.module_path is not None:
                self.by_path[layer.module_path].append(layer.id)
            else:
                self.functional[layer.parents[-1] if layer.parents else ""].append(layer.id)
        self.known = set(self.by_path) | {p for layer in graph for p in layer.parents}  # every module path the graph knows
        self.call_seen: dict[str, list[str]] = collections.defaultdict(list)  # module path -> fx node names seen
        self.func_used: dict[str, str] = {}  # exported fx node name (scoped) -> layer id
        self.taken: set[str] = set()

    def scoped(self, fx_name: str, path: str, meta: dict[str, str]) -> tuple[tuple[str, ...], MatchHow]:
        """A node of the dynamo exporter, by its name scopes: a leaf module call, or a functional op inside ``path``."""
        graph = self.graph
        if path in self.by_path:  # a leaf module call
            calls = self.call_seen[path]
            if fx_name not in calls:
                calls.append(fx_name)
            ids = self.by_path[path]
            layer_ids: tuple[str, ...] = (ids[min(calls.index(fx_name), len(ids) - 1)],)
            if "FuseBatchNormInto" in meta.get("pkg.onnxscript.rewriter.rule_name", ""):
                feeders = [p for p in graph.predecessors(layer_ids[0]) if graph[p].op_kind in ("conv", "conv_transpose", "linear")]
                layer_ids = tuple(feeders) + layer_ids
            return layer_ids, MatchHow.SCOPE
        key = f"{path}/{fx_name}"
        if key not in self.func_used:
            kind = _fx_kind(meta)
            cands = [c for c in self.functional.get(path, []) if c not in self.taken]
            match = [c for c in cands if graph[c].op_kind == kind]
            match = match or [c for c in cands if graph[c].op_kind in _KIND_ALIASES.get(kind, ())]
            if match:
                self.func_used[key] = match[0]
                self.taken.add(match[0])
        return ((self.func_used[key],), MatchHow.KIND_ORDER) if key in self.func_used else ((), MatchHow.UNMAPPED)

    def torchscript(self, n: Any) -> tuple[tuple[str, ...], MatchHow]:
        """A node of the TorchScript exporter, by the module path in its name, else by kind and order."""
        scoped = _scope_path([p for p in n.name.split("/")[1:-1] if p], self.known)
        if scoped is not None and scoped in self.by_path:
            return (self.by_path[scoped][0],), MatchHow.SCOPE
        if n.op_type in _ONNX_OP_KINDS:  # a functional op inside module `scoped` (or the top level): kind, then order
            kinds = _ONNX_OP_KINDS[n.op_type]
            match = [c for c in self.functional.get(scoped or "", []) if c not in self.taken and self.graph[c].op_kind in kinds]
            if match:
                self.taken.add(match[0])
                return (match[0],), MatchHow.KIND_ORDER
        return (), MatchHow.UNMAPPED


_VIEWS = frozenset({"view"})
# ONNX op types of the TorchScript exporter -> the layer kinds they come from (functional ops, matched by kind and order)
_ONNX_OP_KINDS: dict[str, frozenset[str]] = {
    "Gemm": frozenset({"addmm", "linear", "matmul"}), "MatMul": frozenset({"matmul", "linear", "addmm", "einsum"}),
    "Conv": frozenset({"conv"}), "ConvTranspose": frozenset({"conv_transpose"}),
    "Add": frozenset({"add"}), "Sub": frozenset({"sub"}), "Mul": frozenset({"mul"}), "Div": frozenset({"div"}),
    "Relu": frozenset({"relu"}), "Sigmoid": frozenset({"sigmoid"}), "Tanh": frozenset({"tanh"}), "Softmax": frozenset({"softmax"}),
    "LogSoftmax": frozenset({"log_softmax"}), "Erf": frozenset({"unary", "gelu"}), "Gelu": frozenset({"gelu"}),
    **{op: frozenset({"unary"}) for op in ("Exp", "Log", "Sqrt", "Abs", "Neg", "Pow", "Cos", "Sin", "Reciprocal")},
    **{op: frozenset({"reduce"}) for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ArgMax", "ArgMin")},
    **{op: frozenset({"compare"}) for op in ("Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Not")},
    "Where": frozenset({"elementwise"}), "Cast": frozenset({"cast"}), "Concat": frozenset({"concat"}),
    "Gather": frozenset({"gather", "embedding"}), "CumSum": frozenset({"cumulative"}),
    **{op: _VIEWS for op in ("Reshape", "Transpose", "Unsqueeze", "Squeeze", "Flatten", "Expand", "Slice", "Split")},
}


def _scope_path(parts: list[str], known: set[str]) -> str | None:
    """The module path a TorchScript node name's scopes spell. A scope is either a full path (``layer1.0``)
    or a name relative to the one before (``wo`` inside ``…DenseReluDense``); a scope that is no module
    (a wrapper's own name) is skipped. The deepest known path wins."""
    prefix, found = "", None
    for comp in parts:
        for cand in ((f"{prefix}.{comp}" if prefix else comp), comp):
            if cand in known:
                prefix = found = cand
                break
    return found


def _fill_nearest(nodes, out: dict[str, OnnxNodeSource]) -> None:
    """Unmapped nodes take the layers of the nearest mapped node along data edges (BFS)."""
    producer: dict[str, str] = {}
    consumers: dict[str, list[str]] = collections.defaultdict(list)
    for n in nodes:
        for t in n.output:
            producer[t] = n.name
        for t in n.input:
            consumers[t].append(n.name)
    by_name = {n.name: n for n in nodes}

    def neighbours(name: str) -> list[str]:
        n = by_name[name]
        # consumers first: a Constant/Shape helper belongs to the op that uses it
        return [c for t in n.output for c in consumers.get(t, [])] + [producer[t] for t in n.input if t in producer]

    for n in nodes:
        if out[n.name].how is not MatchHow.UNMAPPED:
            continue
        seen, queue = {n.name}, collections.deque([n.name])
        while queue:
            cur = queue.popleft()
            src = out[cur]
            if src.how not in (MatchHow.UNMAPPED, MatchHow.NEAREST) and src.layer_ids:
                out[n.name] = dataclasses.replace(out[n.name], layer_ids=src.layer_ids, how=MatchHow.NEAREST,
                                                  source=out[n.name].source or src.source)
                break
            for nb in neighbours(cur):
                if nb not in seen:
                    seen.add(nb)
                    queue.append(nb)
