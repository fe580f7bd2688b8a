"""Runs a captured graph and hands each layer's inputs and output to the comparison as it goes (no whole-model
activation dump), with what an in-place op overwrites and which inputs a quantizer sees."""

from __future__ import annotations

import torch
from torch import fx, nn

from ..capture import CaptureResult
from ..capture.opkinds import function_kind, method_kind
from ..compression.activations import FakeQuantInput
from ..progress import checkpoint

__all__ = ["Recorder", "first_tensor", "input_quantizers", "overwritten_nodes"]


def first_tensor(out: object) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            t = first_tensor(o)
            if t is not None:
                return t
    return None


def input_quantizers(model: nn.Module) -> dict[str, tuple[float, int]]:
    """Module path -> (scale, zero point) of each int8 input fake-quant hook."""
    out = {}
    for name, m in model.named_modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, FakeQuantInput):
                out[name] = (hook.scale, hook.zero_point)
    return out


def in_place(n: fx.Node, root: nn.Module) -> bool:
    """``n`` overwrites its first argument: ``ReLU(inplace=True)``, ``x.relu_()``, ``F.relu(x, inplace=True)``, ``operator.iadd``."""
    if n.op == "call_module":
        return bool(getattr(root.get_submodule(str(n.target)), "inplace", False))
    if n.kwargs.get("inplace") is True:
        return True
    if n.op == "call_method":
        name = str(n.target)
    elif n.op == "call_function":
        name = getattr(n.target, "__name__", "")
        if getattr(n.target, "__module__", "") in ("_operator", "operator"):
            return name.startswith("i") and name not in ("index", "inv", "invert", "is_", "is_not", "itemgetter")
    else:
        return False
    return name.endswith("_") and not name.endswith("__")


def overwritten_nodes(root: nn.Module, graph: fx.Graph) -> set[str]:
    """Nodes whose value a later in-place op overwrites (through views of it too): their layer's statistics must
    be read from a copy, or ``bn1`` shows the ranges of the ``ReLU(inplace=True)`` after it."""
    out: set[str] = set()
    for n in graph.nodes:
        if n.op in ("call_module", "call_method", "call_function") and n.args and isinstance(n.args[0], fx.Node) and in_place(n, root):
            src: fx.Node | None = n.args[0]
            while src is not None and src.name not in out:
                out.add(src.name)  # a view's source shares its storage: walk back through single-input views
                inputs = [a for a in src.all_input_nodes if a.op != "get_attr"]
                src = inputs[0] if len(inputs) == 1 and src.op in ("call_method", "call_function") and is_view(src) else None
    return out


def is_view(n: fx.Node) -> bool:
    kind = method_kind(str(n.target)) if n.op == "call_method" else function_kind(n.target)
    return kind == "view"


class Recorder(fx.Interpreter):
    """Runs a captured model and hands each layer's output (and chosen inputs) to callbacks; the
    default callbacks keep them (``outputs``, ``inputs``)."""

    def __init__(self, cap: CaptureResult, input_layers: set[str], on_output=None, on_inputs=None,
                 overwritten: set[str] | None = None) -> None:
        super().__init__(cap.runnable())
        self.extra_traceback = False  # our errors name the layer; fx's graph dump would bury that
        self.on_output = on_output or self.outputs_setitem
        self.on_inputs = on_inputs or self.inputs_setitem
        self.node_layer = cap.node_layer
        last: dict[str, str] = {}
        first: dict[str, str] = {}
        for n in self.graph.nodes:
            lid = cap.node_layer.get(n.name)
            if lid is not None:
                last[lid] = n.name
                first.setdefault(lid, n.name)
        self.last_node = {v: k for k, v in last.items()}  # node name -> layer id whose output it is
        self.first_node = {v: k for k, v in first.items() if k in input_layers}
        # outputs a later in-place op changes: handed over as copies (computed once per capture by the caller)
        self.overwritten = overwritten if overwritten is not None else overwritten_nodes(self.module, self.graph)
        self.outputs: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, list[tuple[str, torch.Tensor]]] = {}
        self.order: list[str] = []

    def run_node(self, n: fx.Node):
        checkpoint()
        lid = self.first_node.get(n.name)
        if lid is not None:
            ops = []
            for arg in n.args:
                for node in arg if isinstance(arg, (list, tuple)) else [arg]:
                    if not isinstance(node, fx.Node):
                        continue
                    v = self.env.get(node)
                    if isinstance(v, torch.Tensor) and v.is_floating_point():
                        ops.append((self._source(node), v))
            self.on_inputs(lid, ops)
        out = super().run_node(n)
        lid = self.last_node.get(n.name)
        if lid is not None:
            t = first_tensor(out)
            if t is not None and t.is_floating_point():
                self.order.append(lid)
                self.on_output(lid, t.clone() if n.name in self.overwritten else t)
        return out

    def outputs_setitem(self, lid: str, t: torch.Tensor) -> None:
        self.outputs[lid] = t

    def inputs_setitem(self, lid: str, ops: list[tuple[str, torch.Tensor]]) -> None:
        self.inputs[lid] = ops

    def _source(self, node: fx.Node) -> str:
        """The layer that produced ``node`` (walking back through glue such as views), or the input's name."""
        seen = 0
        while seen < 50:
            lid = self.node_layer.get(node.name)
            if lid is not None:
                return lid
            if node.op == "placeholder":
                return f"input:{node.name}"
            parents = [a for a in node.all_input_nodes if a.op != "get_attr"]
            if len(parents) != 1:
                return node.name
            node, seen = parents[0], seen + 1
        return node.name
