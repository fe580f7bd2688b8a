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


def absorbed_nodes(original, optimized) -> dict[str, list[str]]:
    """For each optimised node, the original nodes it computes (see module docstring).

    Every optimised node gets anchor tensors from the original graph: its outputs that still
    exist, else the original tensor/node its name was derived from (ORT names layout-transformed
    and fused nodes after them: ``relu_15_nchwc``, ``node_MatMul_9/MatMulAddFusion``). Walking the
    original graph back from the anchors, up to any other node's anchor or a surviving tensor,
    collects the nodes it absorbed. Helpers with no anchor (``ReorderInput``) join their consumer.
    """
    producer: dict[str, Any] = {}  # tensor -> the onnx NodeProto writing it
    orig_names = {n.name: n for n in original.graph.node}
    orig_tensors: set[str] = set()
    for n in original.graph.node:
        orig_tensors.update(n.input)
        orig_tensors.update(n.output)
        for t in n.output:
            producer[t] = n
    opt_nodes = list(optimized.graph.node)
    opt_tensors = {t for n in opt_nodes for t in (*n.input, *n.output)}
    stop = {i.name for i in original.graph.input} | {i.name for i in original.graph.initializer} | {""}
    surviving = orig_tensors & opt_tensors

    def anchors_of(n) -> list[str]:
        outs = [t for t in n.output if t in surviving and t in producer]
        if outs:
            return outs
        base = n.name
        for _ in range(4):
            if base in producer:
                return [base]
            if base in orig_names:
                return [t for t in orig_names[base].output if t in producer]
            stripped = _DERIVED_SUFFIX.sub("", base)
            if stripped == base:
                break
            base = stripped
        return []

    orig_consumers: dict[str, list] = collections.defaultdict(list)
    for n in original.graph.node:
        for t in n.input:
            orig_consumers[t].append(n)

    def extend_forward(n, ts: list[str]) -> list[str]:
        """A layout-transformed conv named after its own output may also have absorbed the
        residual Add (its 4th, Sum, input) and the activation after it (its attribute)."""
        if not ts or any(t in surviving for t in ts):
            return ts
        attrs = {a.name for a in n.attribute}
        has_sum = len(n.input) > 3 and bool(n.input[3])
        t = ts[0]
        for op_types, wanted in ((("Add",), has_sum), (_ACTIVATIONS, "activation" in attrs)):
            users = orig_consumers.get(t, [])
            if wanted and len(users) == 1 and users[0].op_type in op_types:
                t = users[0].output[0]
        return [t]

    base = {n.name: anchors_of(n) for n in opt_nodes}
    anchors = {n.name: extend_forward(n, base[n.name]) for n in opt_nodes}
    boundary = surviving | {t for ts in anchors.values() for t in ts} | {t for ts in base.values() for t in ts}
    orig_index = {name: k for k, name in enumerate(orig_names)}
    result: dict[str, list[str]] = {}
    for n in opt_nodes:
        absorbed: dict[str, None] = {}
        own = set(base[n.name])
        stack = [producer[t] for t in anchors[n.name]]
        while stack:
            node = stack.pop()
            if node.name in absorbed:
                continue
            absorbed[node.name] = None
            for t in node.input:
                if t in stop or (t in boundary and t not in own) or t not in producer:
                    continue
                stack.append(producer[t])
        result[n.name] = sorted(absorbed, key=lambda x: orig_index.get(x, 0))
    # nodes ORT removed by folding them into their producer (e.g. BatchNormalization folded into
    # Conv weights, Identity/Dropout dropped) belong to the op that produces their input
    absorbed_any = {x for names in result.values() for x in names}
    for node in original.graph.node:
        if node.name in absorbed_any or node.op_type not in _FOLDABLE:
            continue
        src = next((producer[t].name for t in node.input if t in producer), None)
        for names in result.values():
            if src is not None and src in names and node.name not in names:
                names.append(node.name)
    # helpers with no anchor take their consumer's nodes (else their producer's)
    consumers: dict[str, list[str]] = collections.defaultdict(list)
    made_by: dict[str, str] = {}
    for n in opt_nodes:
        for t in n.input:
            consumers[t].append(n.name)
        for t in n.output:
            made_by[t] = n.name
    for _ in range(3):  # chains of helpers
        for n in opt_nodes:
            if result[n.name]:
                continue
            near = [c for t in n.output for c in consumers.get(t, [])] + [made_by[t] for t in n.input if t in made_by]
            donor = next((x for x in near if result.get(x)), None)
            if donor:
                result[n.name] = list(result[donor])
    return result
