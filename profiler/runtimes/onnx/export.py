"""Export a PyTorch model to ONNX (torch.onnx dynamo exporter first, TorchScript as the fallback) and
load an ONNX file back (its graph, with or without the weights)."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ...capture import quiet_torch_logs
from ...errors import OnnxMappingError, OutputError, describe, first_line, plain, root_cause
from ...resources import untouched
from .results import ExporterKind

__all__ = ["export_onnx", "load_onnx"]

log = logging.getLogger(__name__)

_OP_RES = (re.compile(r"\b[A-Za-z_][A-Za-z_0-9]*::[A-Za-z_][A-Za-z_0-9]*"), re.compile(r"\baten\.[A-Za-z_0-9]+(?:\.[A-Za-z_0-9]+)?"))


def export_onnx(model: torch.nn.Module, inputs: Sequence[torch.Tensor], path: Path,
                external_data: bool | None = None) -> tuple[ExporterKind, list[str]]:
    """Export with the dynamo exporter (own optimiser off), TorchScript exporter as fallback.

    ``external_data`` True writes the weights to ``<path>.data`` as they stream out of the model
    (work files: nothing weight-sized is built in memory); None: one file unless it is over 2 GB."""
    notes: list[str] = []
    args = tuple(inputs)
    if not path.parent.is_dir():
        raise OutputError(f"Cannot write {path}: the folder {path.parent} does not exist.")
    try:
        with quiet_torch_logs(), contextlib.redirect_stdout(io.StringIO()), untouched(model):
            prog = torch.onnx.export(model, args, dynamo=True, external_data=False, verbose=False)
    except Exception as exc:  # fall back, then report both (the exception is logged at -vv)
        dynamo_text = f"{exc} {exc.__cause__ or ''}"
        dynamo_err = _export_error(exc)
        log.debug("the dynamo ONNX exporter failed", exc_info=True)
    else:
        if prog is None:
            raise OnnxMappingError("torch.onnx.export returned no program")
        try:
            prog.save(str(path), external_data=external_data)
        except OSError as exc:
            raise OutputError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
        return ExporterKind.DYNAMO, notes
    try:
        with quiet_torch_logs(), contextlib.redirect_stdout(io.StringIO()), untouched(model):
            torch.onnx.export(model, args, str(path), dynamo=False)
        notes.append(f"the dynamo exporter failed ({dynamo_err}); used the TorchScript exporter (no node metadata)")
        log.warning("the dynamo ONNX exporter failed (%s); used the TorchScript exporter", dynamo_err)
        return ExporterKind.TORCHSCRIPT, notes
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
    except Exception as exc:
        text = f"{exc} {dynamo_text}"
        ops = [m.group(0) for r in _OP_RES for m in r.finditer(text) if not m.group(0).startswith(("prim::", "aten::add"))]
        raise OnnxMappingError(
            f"Neither ONNX exporter could export {type(model).__name__}"
            + (f" (unsupported op {ops[0]})" if ops else "")
            + f". dynamo: {dynamo_err} | TorchScript: {_export_error(exc)} (-vv logs both in full)"
        ) from exc


_ERROR_LINE = re.compile(r"Error|error|[Uu]nsupported|not supported|[Ff]ailed|[Cc]annot|[Uu]nable")


def _export_error(exc: BaseException) -> str:
    """The line of an exporter's error that says what failed: the innermost cause (torch.onnx wraps it in a
    banner), without colour codes, skipping the TorchScript IR a failure can print first."""
    inner = root_cause(exc)
    lines = [ln.strip() for ln in plain(str(inner)).splitlines() if ln.strip()]
    said = [ln for ln in lines if _ERROR_LINE.search(ln) and not ln.startswith(("%", "graph(", "return ", "#"))]
    if not said or said[0] == (lines[0] if lines else None):
        return describe(inner)
    return f"{type(inner).__name__}: {first_line(RuntimeError(said[0]))}"


def load_onnx(path: str | Path, weights: bool = False):
    """The ONNX model at ``path``, checked. Without ``weights``, initializers stored in external
    data files stay on disk: the node graph is all the mapping needs."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise OnnxMappingError(f"ONNX file not found: {p}.")
    try:
        onnx.checker.check_model(str(p))  # from the file: external data is checked where it lies
        model = onnx.load(str(p), load_external_data=weights)
    except Exception as exc:
        raise OnnxMappingError(f"{p} is not a valid ONNX model (corrupt or truncated?): {describe(exc)}") from exc
    if not model.graph.node:
        raise OnnxMappingError(f"{p} has an empty graph.")
    return model
