"""The layer graph: one ``Layer`` record per leaf module call or functional op, in a networkx DAG.

Layer ids are the fully qualified module path (``layer1.0.conv1``); a module called more than
once gets ``path:1``, ``path:2`` for its later calls; a functional op gets its enclosing module
path plus the fx node name (``layer1.0.add_3``; top level: ``add_3``). The same id keys every
overlay: metrics, timings, roofline points, plans, ONNX mappings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import networkx as nx

if TYPE_CHECKING:
    import torch

__all__ = ["TensorRole", "TensorMeta", "SourceLocation", "Layer", "LayerGraph", "GraphView", "CaptureMethod", "dtype_name"]

_DTYPE_BYTES = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
    "complex64": 8, "complex128": 16, "float8_e4m3fn": 1, "float8_e5m2": 1,
}


class CaptureMethod(StrEnum):
    FX = "torch.fx"
    EXPORT = "torch.export"
    EAGER = "eager forward"  # recorded from one eager forward (static profiles: shapes only, nothing runnable)


class TensorRole(StrEnum):
    ACTIVATION = "activation"
    PARAMETER = "parameter"
    BUFFER = "buffer"


@dataclass(frozen=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without the "torch." prefix
    role: TensorRole = TensorRole.ACTIVATION
    name: str = ""  # parameter/buffer name where it is one
    tied_to: str = ""  # a tied weight (GPT-2's lm_head.weight is wte.weight): the name its storage was first registered under

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return _DTYPE_BYTES.get(self.dtype, 4)

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    @property
    def is_weight(self) -> bool:
        return self.role is not TensorRole.ACTIVATION


@dataclass(frozen=True)
class SourceLocation:
    file: str
    line: int
    function: str = ""
    code: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Layer:
    id: str
    op_kind: str  # normalised kind that picks the formula: "conv", "linear", "add", "view", ...
    target: str  # what was called: "torch.nn.Conv2d", "torch.add", "Tensor.view", "aten.relu.default"
    module_path: str | None = None  # set for module calls
    module_type: str | None = None  # qualified class name for module calls
    parents: tuple[str, ...] = ()  # enclosing module paths, outermost first
    source: SourceLocation | None = None
    operands: tuple[TensorMeta, ...] = ()  # tensor operands in call order (weights included)
    outputs: tuple[TensorMeta, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)  # JSON scalars/lists only
    is_view: bool = False  # output aliases an input: no data moved
    fx_nodes: tuple[str, ...] = ()  # graph nodes that make up this layer

    @property
    def activations(self) -> tuple[TensorMeta, ...]:
        return tuple(t for t in self.operands if not t.is_weight)

    @property
    def weights(self) -> tuple[TensorMeta, ...]:
        return tuple(t for t in self.operands if t.is_weight)

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.operands if t.role is TensorRole.PARAMETER)

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.weights)

    @property
    def type_name(self) -> str:
        """Short type for tables: ``Conv2d``, ``add``, ``max_pool2d`` (aten overload dropped)."""
        if self.module_type:
            return self.module_type.rsplit(".", 1)[-1]
        if self.target.startswith("aten."):
            return self.target.split(".")[1]
        return self.target.rsplit(".", 1)[-1]

    @property
    def label(self) -> str:
        return f"{self.id} ({self.type_name})"


@dataclass(frozen=True)
class GraphView:
    """What a graph view draws: each layer's visible node, the nodes, edges between them, positions."""

    mapping: dict[str, str]  # layer id -> visible node (itself, or the collapsed module standing for it)
    nodes: list[str]
    edges: list[tuple[str, str]]
    pos: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class LayerGraph:
    """Layers in execution order plus the data-flow edges between them."""

    layers: tuple[Layer, ...]
    edges: tuple[tuple[str, str], ...]
    input_layers: tuple[str, ...] = ()  # layers that read a model input
    output_layers: tuple[str, ...] = ()  # layers whose output is a model output

    def __post_init__(self) -> None:
        ids = [layer.id for layer in self.layers]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate layer ids: {dup[:5]}")

    # Cached views; frozen dataclass, so use object.__setattr__ once.
    @property
    def _index(self) -> dict[str, Layer]:
        cache = self.__dict__.get("_index_cache")
        if cache is None:
            cache = {layer.id: layer for layer in self.layers}
            object.__setattr__(self, "_index_cache", cache)
        return cache

    def activation_peak_bytes(self) -> int:
        """Peak bytes of layer outputs alive at once in execution order, from the captured shapes: an
        output lives from its layer to its last consumer (the model's outputs to the end); views
        allocate nothing. The same definition a timed profile measures on real storages, so a static
        profile (no forward at all) reports the same peak."""
        order = {lid: i for i, lid in enumerate(self.ids())}
        last = {lid: i for lid, i in order.items()}
        for a, b in self.edges:
            last[a] = max(last[a], order[b])
        outputs = set(self.output_layers)
        frees: dict[int, int] = {}
        live = peak = 0
        for i, layer in enumerate(self.layers):
            size = 0 if layer.is_view else sum(t.nbytes for t in layer.outputs)
            live += size
            peak = max(peak, live)
            if layer.id not in outputs:
                frees[last[layer.id]] = frees.get(last[layer.id], 0) + size
            live -= frees.pop(i, 0)
        return peak

    @property
    def nx(self) -> nx.DiGraph:
        g = self.__dict__.get("_nx_cache")
        if g is None:
            g = nx.DiGraph()
            for i, layer in enumerate(self.layers):
                g.add_node(layer.id, order=i)
            g.add_edges_from(self.edges)
            object.__setattr__(self, "_nx_cache", g)
        return g

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __contains__(self, layer_id: object) -> bool:
        return layer_id in self._index

    def __getitem__(self, layer_id: str) -> Layer:
        try:
            return self._index[layer_id]
        except KeyError as exc:
            raise KeyError(f"no layer {layer_id!r} in this graph") from exc

    def ids(self) -> list[str]:
        return [layer.id for layer in self.layers]

    def predecessors(self, layer_id: str) -> list[str]:
        return list(self.nx.predecessors(layer_id))

    def successors(self, layer_id: str) -> list[str]:
        return list(self.nx.successors(layer_id))

    def module_paths(self) -> list[str]:
        """Every module path that encloses at least one layer (the collapsible hierarchy)."""
        seen: dict[str, None] = {}
        for layer in self.layers:
            for p in layer.parents:
                seen.setdefault(p, None)
        return list(seen)

    # ---------------------------------------------------------------- collapse / expand
    def visible_node(self, layer_id: str, depth: int | None = None, expanded: Iterable[str] = (),
                     collapsed: Iterable[str] = ()) -> str:
        """The node that stands for ``layer_id`` when parts of the module hierarchy are collapsed.

        A module is collapsed when it is in ``collapsed``, or when ``depth`` is given, it sits at
        nesting level >= ``depth`` (top-level modules are level 1) and is not in ``expanded``:
        ``depth=1`` draws each top-level module as one node.
        The outermost collapsed ancestor wins; with nothing collapsed the layer stands for itself.
        """
        exp, col = set(expanded), set(collapsed)
        for level, parent in enumerate(self[layer_id].parents, start=1):
            if parent in col or (depth is not None and level >= depth and parent not in exp):
                return parent
        return layer_id

    def collapsed(self, depth: int | None = None, expanded: Iterable[str] = (),
                  collapsed: Iterable[str] = ()) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """Map every layer to its visible node and return the edges between visible nodes."""
        exp, col = set(expanded), set(collapsed)
        mapping = {layer.id: self.visible_node(layer.id, depth, exp, col) for layer in self.layers}
        edges: dict[tuple[str, str], None] = {}
        for a, b in self.edges:
            va, vb = mapping[a], mapping[b]
            if va != vb:
                edges.setdefault((va, vb), None)
        return mapping, list(edges)

    def view(self, depth: int | None = None, expanded: Iterable[str] = (), collapsed: Iterable[str] = ()) -> GraphView:
        """The collapsed graph and its layout, computed once per (depth, expanded, collapsed) and kept
        (the last few), so a worker thread can prepare what a view will draw."""
        key = (depth, frozenset(expanded), frozenset(collapsed))
        cache = self.__dict__.get("_view_cache")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_view_cache", cache)
        found = cache.get(key)
        if found is None:
            mapping, edges = self.collapsed(depth, key[1], key[2])
            nodes = list(dict.fromkeys(mapping.values()))
            found = GraphView(mapping, nodes, edges, self.dag_layout(nodes, edges))
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            cache[key] = found
        return found

    def dag_layout(self, nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, tuple[float, float]]:
        """Layered top-to-bottom DAG layout: rank = longest path from a source, x by barycentre."""
        g = nx.DiGraph()
        g.add_nodes_from(nodes)
        g.add_edges_from(edges)
        rank: dict[str, int] = {}
        for n in nx.topological_sort(g):
            preds = list(g.predecessors(n))
            rank[n] = 1 + max((rank[p] for p in preds), default=-1)
        by_rank: dict[int, list[str]] = {}
        for n in nodes:  # keep execution order inside a rank
            by_rank.setdefault(rank[n], []).append(n)
        x: dict[str, float] = {}
        for r in sorted(by_rank):
            row = by_rank[r]
            row.sort(key=lambda n: (sum(x[p] for p in g.predecessors(n)) / max(1, g.in_degree(n))) if g.in_degree(n) else 0.0)
            width = len(row)
            for i, n in enumerate(row):
                x[n] = i - (width - 1) / 2
        return {n: (x[n], -float(rank[n])) for n in nodes}


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype as ``TensorMeta`` stores it: ``float32``, not ``torch.float32``."""
    return str(dtype).removeprefix("torch.")
