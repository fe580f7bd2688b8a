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
import re
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from ..errors import Cancelled, CaptureError, ProfilingError, describe
from ..graph import CaptureMethod, LayerGraph
from ..progress import checkpoint
from ..resources import untouched
from .assemble import assemble, assign_export, assign_fx, is_leaf_module
from .failures import input_error, run_and_locate_failure, submodule_hint
from .opkinds import function_kind
from .record import module_stack, record_nodes, source_location

__all__ = ["CaptureResult", "capture", "capture_exported", "input_error", "is_leaf_module", "run_and_locate_failure"]

log = logging.getLogger(__name__)



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


class _LeafTracer(fx.Tracer):
    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        checkpoint()  # once per module call while tracing: Cancel does not wait for a 10,000-module trace
        return is_leaf_module(m)


def _node_label(n: fx.Node) -> str:
    stack = module_stack(n)
    if n.op == "call_module":
        return str(n.target)
    return f"{stack[-1][1]}.{n.name}" if stack else n.name


def capture_exported(ep: torch.export.ExportedProgram, model: nn.Module | None, inputs: Sequence[torch.Tensor],
                     notes: list[str] | None = None) -> CaptureResult:
    """Layer graph of an ExportedProgram (from torch.export or a loaded .pt2)."""
    gm = ep.module()
    records = record_nodes(gm, inputs, _node_label)
    assign = assign_export(gm, model, records)
    graph, node_layer = assemble(gm.graph, model if model is not None else gm, records, assign)
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
                records = record_nodes(gm, inputs, _node_label)
            assign = assign_fx(gm.graph, model, records)
            layer_graph, node_layer = assemble(gm.graph, model, records, assign)
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
        where = source_location(text)
        at = f" The blocking code is at {where}: `{where.code}`." if where else ""
        raise CaptureError(
            f"Could not capture {type(model).__name__}'s graph. " + " | ".join(parts) + "." + at
            + " Data-dependent Python control flow (if/while on tensor values) blocks both; "
            "move it out of forward() or make it a tensor op (torch.where)." + submodule_hint(model)
        ) from exc
    notes = [f"torch.fx could not trace the model ({fx_error}); used torch.export."] if fx_error else []
    log.info("captured %s with torch.export", type(model).__name__)
    return capture_exported(ep, model, inputs, notes)
