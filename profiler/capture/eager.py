"""Capture a model's layer graph from one eager forward: the static profile's fast path.

torch.fx cannot trace most Hugging Face models, and torch.export costs 4x fvcore on BERT-base (it
traces through dynamo's machinery and fake tensors). A static profile needs only which calls ran, on
which tensors, with which shapes, so this runs the model once, as the user would, and records every
torch-level call through a ``TorchFunctionMode`` plus module hooks:

- a leaf module (``is_leaf_module``) is one ``call_module`` node, its insides unrecorded;
- a torch function (``F.linear``, ``torch.cat``) is a ``call_function`` node, a Tensor method
  (``view``, ``add_``, ``x + y``) a ``call_method`` node, exactly what the fx tracer would make;
- data flow follows tensor identity (an in-place op makes the tensor its node's value), parameters
  a non-leaf module uses directly become ``get_attr`` nodes with their names.

The nodes carry ``nn_module_stack`` and the user's source line, so the fx path's layer assignment
and assembly build the ``LayerGraph`` unchanged, with the shapes taken during the run (no second,
interpreted forward). Python control flow is simply the path this input took, as with torch.export.
Nothing here is runnable: an eager capture cannot be timed (``CaptureResult.graph_module`` is None).

The model is not changed: hooks are removed on the way out, and the run uses ``no_grad`` rather
than ``inference_mode`` so no inference tensor can be cached on a module.
"""

from __future__ import annotations

import inspect
import linecache
import operator
import os
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakTensorKeyDictionary

from ..errors import Cancelled
from ..graph import CaptureMethod, TensorMeta
from ..progress import checkpoint
from ..resources import untouched
from .assemble import assemble, assign_fx, is_leaf_module
from .failures import input_error
from .record import NodeRecord, storage_ptr, tensor_meta, tensors_of
from .trace import CaptureResult

__all__ = ["capture_eager"]

_TORCH_DIR = os.path.dirname(torch.__file__)
_THIS_FILE = __file__
_TENSOR_PROPERTIES_AS_METHODS = {"T", "mT", "H", "mH", "data", "real", "imag"}


def capture_eager(model: nn.Module, inputs: Sequence[torch.Tensor]) -> CaptureResult:
    """Layer graph of one eager forward of ``model`` on ``inputs`` (shapes, no timing)."""
    rec = _Recorder(model, inputs)
    try:
        with torch.no_grad(), untouched(model):
            out = rec.run()
    finally:
        rec.remove_hooks()
    rec.finish(out)
    layer_graph, node_layer = assemble(rec.graph, model, rec.records, assign_fx(rec.graph, model, rec.records))
    return CaptureResult(layer_graph, None, node_layer, CaptureMethod.EAGER)


class _Recorder(TorchFunctionMode):
    def __init__(self, model: nn.Module, inputs: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.model, self.inputs = model, tuple(inputs)
        self.graph = fx.Graph()
        self.records: dict[str, NodeRecord] = {}
        self.value_of: WeakTensorKeyDictionary = WeakTensorKeyDictionary()  # tensor -> (node, index or None)
        self.getitems: dict[tuple[str, int], fx.Node] = {}
        self.attrs: dict[int, fx.Node] = {}  # id(parameter, buffer or constant) -> get_attr node
        self.names = {id(t): n for n, t in (*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False))}
        self.keep: list[torch.Tensor] = []  # constants with a get_attr node: their ids must stay theirs
        self.stack: list[tuple[str, str, str]] = []  # (key, path, class) of the modules being called, outermost first
        self.calls: dict[str, int] = {}
        self.leaf: nn.Module | None = None  # the leaf module running now: nothing inside it is recorded
        self.leaf_in: _LeafCall | None = None  # what the running leaf module was called with
        self.handles: list[Any] = []
        module_names = {m: n for n, m in model.named_modules(remove_duplicate=False)}
        for m, name in module_names.items():
            if name:
                self.handles.append(m.register_forward_pre_hook(self._pre(name), with_kwargs=True))
                self.handles.append(m.register_forward_hook(self._post(name), with_kwargs=True))
        names = [p.name for p in inspect.signature(model.forward).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        for i, t in enumerate(self.inputs):
            ph = self.graph.placeholder(names[i] if i < len(names) else f"input_{i}")
            self.value_of[t] = (ph, None)

    def remove_hooks(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def run(self) -> Any:
        try:
            with self:
                return self.model(*self.inputs)
        except Cancelled:
            raise
        except Exception as exc:
            where = self.stack[-1][1] if self.stack else None
            cls = self.stack[-1][2].rsplit(".", 1)[-1] if self.stack else type(self.model).__name__
            raise input_error(self.inputs, where, cls, exc) from exc

    def finish(self, out: Any) -> None:
        self.graph.output(tuple(self._node_of(t) for t in tensors_of(out)))

    # ---------------------------------------------------------------- values -> nodes
    def _node_of(self, t: torch.Tensor) -> fx.Node:
        bound = self.value_of.get(t)
        if bound is not None:
            node, index = bound
            if index is None:
                return node
            key = (node.name, index)
            if key not in self.getitems:
                # glue, never a layer: its own names leave fx's getitem_N to real indexing, as in a traced graph
                self.getitems[key] = self.graph.create_node("call_function", operator.getitem, (node, index),
                                                            name=f"{node.name}_item{index}")
            return self.getitems[key]
        attr = self.attrs.get(id(t))
        if attr is None:
            name = self.names.get(id(t))
            if name is None:  # a tensor made outside any recorded call (a module attribute that is no buffer)
                name = f"_tensor_constant{len(self.keep)}"
                self.keep.append(t)
            attr = self.attrs[id(t)] = self.graph.get_attr(name)
        return attr

    def _bind(self, value: Any, node: fx.Node) -> None:
        if isinstance(value, torch.Tensor):
            self.value_of[value] = (node, None)
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                if isinstance(v, torch.Tensor):
                    self.value_of[v] = (node, i)

    def _args(self, args: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, list[tuple[str, torch.Tensor]]]:
        """``args``/``kwargs`` with each tensor replaced by its node, and the (node name, tensor) read."""
        read: list[tuple[str, torch.Tensor]] = []

        def sub(v: Any) -> Any:
            if isinstance(v, torch.Tensor):
                node = self._node_of(v)
                read.append((node.name, v))
                return node
            if isinstance(v, (tuple, list)):
                return type(v)(sub(x) for x in v) if type(v) in (tuple, list) else tuple(sub(x) for x in v)
            if isinstance(v, dict):
                return {k: sub(x) for k, x in v.items()}
            return v

        return sub(tuple(args)), sub(dict(kwargs)), read

    def _record(self, op: str, target: Any, args: Any, kwargs: dict[str, Any], run: Any, where: str | None) -> Any:
        node_args, node_kwargs, read = self._args(args, kwargs)
        in_shapes = [(name, tensor_meta(t)) for name, t in read]  # before an in-place op runs
        in_ptrs = {storage_ptr(t) for _, t in read}
        value = run()
        outs = tensors_of(value)
        if not outs:
            return value  # a shape query, a dtype, an in-place write that returns None: glue, as in fx
        # `x += y` calls Tensor.add_: name it `add`, as the fx tracer does, so layer ids agree across captures
        name = target[:-1] if op == "call_method" and target.endswith("_") and not target.endswith("__") else None
        self._add_node(op, target, name, _LeafCall(read, node_args, node_kwargs, in_shapes, where), value, outs, in_ptrs)
        return value

    def _add_node(self, op: str, target: Any, name: str | None, call: _LeafCall, value: Any, outs: list[torch.Tensor],
                  in_ptrs: set[int]) -> None:
        """The node of one recorded call, with its module stack, source line and shapes; ``value`` becomes its output."""
        node = self.graph.create_node(op, target, call.args, call.kwargs, name=name)
        node.meta["nn_module_stack"] = {key: (path, cls) for key, path, cls in self.stack}
        node.meta["stack_trace"] = call.where
        aliases = all(storage_ptr(t) in in_ptrs for t in outs)
        self.records[node.name] = NodeRecord(node, call.in_shapes, [tensor_meta(t) for t in outs], isinstance(value, torch.Tensor), aliases)
        self._bind(value, node)

    # ---------------------------------------------------------------- torch-level calls
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.leaf is not None:
            return func(*args, **kwargs)
        checkpoint()
        op, target = _target(func)
        if op is None:
            return func(*args, **kwargs)
        return self._record(op, target, args, kwargs, lambda: func(*args, **kwargs), _where())

    # ---------------------------------------------------------------- modules
    def _pre(self, path: str) -> Any:
        def hook(mod: nn.Module, args: Any, kwargs: Any) -> None:
            if self.leaf is not None:
                return
            k = self.calls.get(path, 0)
            self.calls[path] = k + 1
            cls = type(mod)
            self.stack.append((f"{path}@{k}" if k else path, path, f"{cls.__module__}.{cls.__qualname__}"))
            if is_leaf_module(mod):
                with _Paused(self):
                    node_args, node_kwargs, read = self._args(args, kwargs)
                    in_shapes = [(name, tensor_meta(t)) for name, t in read]
                self.leaf_in = _LeafCall(read, node_args, node_kwargs, in_shapes, _where())
                self.leaf = mod
        return hook

    def _post(self, path: str) -> Any:
        def hook(mod: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
            if self.leaf is not None and self.leaf is not mod:
                return
            if self.leaf is mod:
                self.leaf = None
                call, self.leaf_in = self.leaf_in, None
                assert call is not None
                with _Paused(self):
                    outs = tensors_of(out)
                    if outs:
                        self._add_node("call_module", path, None, call, out, outs, {storage_ptr(t) for _, t in call.read})
            if self.stack and self.stack[-1][1] == path:
                self.stack.pop()
        return hook


class _LeafCall(NamedTuple):
    read: list[tuple[str, torch.Tensor]]  # (producer node name, tensor) of every tensor argument
    args: Any  # the arguments with nodes for tensors
    kwargs: Any
    in_shapes: list[tuple[str, TensorMeta]]  # taken before the module ran (it may work in place)
    where: str | None


class _Paused:
    """Our own tensor calls inside a hook (shapes, storage pointers) are not the model's: skip them."""

    def __init__(self, rec: _Recorder) -> None:
        self.rec = rec

    def __enter__(self) -> None:
        self.saved, self.rec.leaf = self.rec.leaf, _PAUSE

    def __exit__(self, *exc: object) -> None:
        self.rec.leaf = self.saved


_PAUSE = nn.Module()  # a stand-in "leaf" while a hook runs


def _target(func: Any) -> tuple[str | None, Any]:
    """fx's (op, target) for a function seen by ``__torch_function__``; (None, None) for a property
    read that is no tensor (``.shape``, ``.dtype``), which fx would record as glue."""
    objclass = getattr(func, "__objclass__", None)
    name = getattr(func, "__name__", "")
    if (objclass is not None and issubclass(objclass, torch._C.TensorBase)) or (name and getattr(torch.Tensor, name, None) is func):
        # a C method (view, add_), or one torch defines in Python (Tensor.split, Tensor.unique)
        if name == "__getitem__":
            return "call_function", operator.getitem
        return "call_method", name
    owner = getattr(func, "__self__", None)
    if getattr(func, "__name__", None) == "__get__" and owner is not None:
        name = getattr(owner, "__name__", "")
        return ("call_method", name) if name in _TENSOR_PROPERTIES_AS_METHODS else (None, None)
    return "call_function", func


def _where() -> str | None:
    """The innermost frame of the user's code (outside torch and this file), in a traceback's format."""
    f: Any = sys._getframe(1)
    while f is not None:
        file = f.f_code.co_filename
        if not file.startswith(_TORCH_DIR) and file != _THIS_FILE and not file.startswith("<"):
            code = linecache.getline(file, f.f_lineno).strip()
            return f'File "{file}", line {f.f_lineno}, in {f.f_code.co_name}\n    {code}'
        f = f.f_back
    return None
