"""Errors that name the layer: a forward that raises on the example inputs is reported at the module
that raised, with the input shapes, before any capture is tried."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..errors import InputSpecError, first_line
from ..graph import dtype_name
from ..resources import untouched

__all__ = ["input_error", "run_and_locate_failure", "submodule_hint", "NodeFailure", "shape_text"]


class NodeFailure(Exception):
    def __init__(self, node: fx.Node, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.node, self.exc = node, exc


def shape_text(inputs: Sequence[torch.Tensor]) -> str:
    return ", ".join(f"{tuple(t.shape)} {dtype_name(t.dtype)}" for t in inputs)


def input_error(inputs: Sequence[torch.Tensor], layer: str | None, cls: str, exc: BaseException, hint: str = "") -> InputSpecError:
    """The error of a forward that failed in ``layer`` (a module path; None: the top-level forward, outside
    every submodule: pre/post-processing, where ``hint`` says how to profile a part)."""
    return InputSpecError(
        f"Running the model on inputs [{shape_text(inputs)}] failed in layer '{layer or '(top-level forward)'}' ({cls}): "
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
        raise input_error(inputs, where[-1] if where else None, cls, exc, "" if where else submodule_hint(model, run=True)) from exc
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------- layer assembly


def submodule_hint(model: nn.Module, run: bool = False) -> str:
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
