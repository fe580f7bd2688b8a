"""ORT op -> the original ONNX nodes it absorbed, recovered from tensor names alone (ORT drops node
metadata and renames fused nodes, but the tensors between fusions survive)."""

from __future__ import annotations

import collections
import re
from typing import Any

__all__ = ["absorbed_nodes"]

_FOLDABLE = frozenset({"BatchNormalization", "Identity", "Dropout", "Add", "Mul", "Sub", "Div", "Relu", "Clip",
                       "Sigmoid", "LeakyRelu", "HardSigmoid", "HardSwish", "Tanh"})
_ACTIVATIONS = ("Relu", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu", "Tanh", "HardSwish")
_DERIVED_SUFFIX = re.compile(r"(_nchwc|/[A-Za-z]+Fusion|_token_\d+|_new_reshape|_output)$")


def absorbed_nodes(original: Any, optimized: Any) -> dict[str, list[str]]:
    """For each optimised node, the original nodes it computes (see module docstring).

    Every optimised node gets anchor tensors from the original graph: its outputs that still
    exist, else the original tensor/node its name was derived from (ORT names layout-transformed
    and fused nodes after them: ``relu_15_nchwc``, ``node_MatMul_9/MatMulAddFusion``). Walking the
    original graph back from the anchors, up to any other node's anchor or a surviving tensor,
    collects the nodes it absorbed. Helpers with no anchor (``ReorderInput``) join their consumer.
    """
    f = _Fusion(original, optimized)
    result = {n.name: f.walk_back(n) for n in f.opt_nodes}
    f.add_folded(result)
    f.give_helpers_their_neighbours(result)
    return result


class _Fusion:
    """The original and optimised graphs, indexed once for the walk."""

    def __init__(self, original: Any, optimized: Any) -> None:
        self.original = original
        self.producer: dict[str, Any] = {}  # tensor -> the original NodeProto writing it
        self.orig_names = {n.name: n for n in original.graph.node}
        self.orig_consumers: dict[str, list[Any]] = collections.defaultdict(list)
        orig_tensors: set[str] = set()
        for n in original.graph.node:
            orig_tensors.update(n.input)
            orig_tensors.update(n.output)
            for t in n.output:
                self.producer[t] = n
            for t in n.input:
                self.orig_consumers[t].append(n)
        self.opt_nodes = list(optimized.graph.node)
        opt_tensors = {t for n in self.opt_nodes for t in (*n.input, *n.output)}
        self.stop = {i.name for i in original.graph.input} | {i.name for i in original.graph.initializer} | {""}
        self.surviving = orig_tensors & opt_tensors
        self.base = {n.name: self.anchors_of(n) for n in self.opt_nodes}
        self.anchors = {n.name: self.extend_forward(n, self.base[n.name]) for n in self.opt_nodes}
        self.boundary = (self.surviving | {t for ts in self.anchors.values() for t in ts}
                         | {t for ts in self.base.values() for t in ts})
        self.orig_index = {name: k for k, name in enumerate(self.orig_names)}

    def anchors_of(self, n: Any) -> list[str]:
        """The node's surviving outputs, else the original tensor or node its name derives from."""
        outs = [t for t in n.output if t in self.surviving and t in self.producer]
        if outs:
            return outs
        base = n.name
        for _ in range(4):
            if base in self.producer:
                return [base]
            if base in self.orig_names:
                return [t for t in self.orig_names[base].output if t in self.producer]
            stripped = _DERIVED_SUFFIX.sub("", base)
            if stripped == base:
                break
            base = stripped
        return []

    def extend_forward(self, n: Any, ts: list[str]) -> list[str]:
        """A layout-transformed conv named after its own output may also have absorbed the
        residual Add (its 4th, Sum, input) and the activation after it (its attribute)."""
        if not ts or any(t in self.surviving for t in ts):
            return ts
        attrs = {a.name for a in n.attribute}
        has_sum = len(n.input) > 3 and bool(n.input[3])
        t = ts[0]
        for op_types, wanted in ((("Add",), has_sum), (_ACTIVATIONS, "activation" in attrs)):
            users = self.orig_consumers.get(t, [])
            if wanted and len(users) == 1 and users[0].op_type in op_types:
                t = users[0].output[0]
        return [t]

    def walk_back(self, n: Any) -> list[str]:
        """Original nodes from the anchors back to another node's anchor or a surviving tensor."""
        absorbed: dict[str, None] = {}
        own = set(self.base[n.name])
        stack = [self.producer[t] for t in self.anchors[n.name]]
        while stack:
            node = stack.pop()
            if node.name in absorbed:
                continue
            absorbed[node.name] = None
            for t in node.input:
                if t in self.stop or (t in self.boundary and t not in own) or t not in self.producer:
                    continue
                stack.append(self.producer[t])
        return sorted(absorbed, key=lambda x: self.orig_index.get(x, 0))

    def add_folded(self, result: dict[str, list[str]]) -> None:
        """Nodes ORT removed by folding them into their producer (BatchNormalization folded into
        Conv weights, Identity/Dropout dropped) belong to the op that produces their input."""
        absorbed_any = {x for names in result.values() for x in names}
        for node in self.original.graph.node:
            if node.name in absorbed_any or node.op_type not in _FOLDABLE:
                continue
            src = next((self.producer[t].name for t in node.input if t in self.producer), None)
            for names in result.values():
                if src is not None and src in names and node.name not in names:
                    names.append(node.name)

    def give_helpers_their_neighbours(self, result: dict[str, list[str]]) -> None:
        """Helpers with no anchor take their consumer's nodes (else their producer's)."""
        consumers: dict[str, list[str]] = collections.defaultdict(list)
        made_by: dict[str, str] = {}
        for n in self.opt_nodes:
            for t in n.input:
                consumers[t].append(n.name)
            for t in n.output:
                made_by[t] = n.name
        for _ in range(3):  # chains of helpers
            for n in self.opt_nodes:
                if result[n.name]:
                    continue
                near = [c for t in n.output for c in consumers.get(t, [])] + [made_by[t] for t in n.input if t in made_by]
                donor = next((x for x in near if result.get(x)), None)
                if donor:
                    result[n.name] = list(result[donor])
