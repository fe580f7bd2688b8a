"""One root exception for everything a user can cause; the CLI prints it without a traceback."""

from __future__ import annotations

import re

__all__ = [
    "LayerScopeError",
    "ModelLoadError",
    "InputSpecError",
    "CaptureError",
    "ProfilingError",
    "HardwareProfileError",
    "ProfileFormatError",
    "OnnxMappingError",
    "HistoryError",
    "BudgetError",
    "SweepError",
    "PlanError",
    "OutputError",
    "UnsafeFileError",
    "ResourceError",
    "Cancelled",
    "ComparisonError",
    "describe",
    "first_line",
    "plain",
    "root_cause",
]


class LayerScopeError(Exception):
    """A problem the user can fix. The message names the file/layer/field and how to fix it."""


class ModelLoadError(LayerScopeError):
    """The model source (file, factory, .pt2, zoo name) could not be turned into a module."""


class UnsafeFileError(ModelLoadError):
    """Loading the file would run code it carries; refused unless the user says they trust it."""


class InputSpecError(LayerScopeError):
    """The input shape / dtype does not fit the model."""


class CaptureError(LayerScopeError):
    """Neither torch.fx nor torch.export could capture the model graph."""


class ProfilingError(LayerScopeError):
    """Running or timing the captured graph failed."""


class HardwareProfileError(LayerScopeError):
    """A hardware/device profile is missing, malformed or has no peak for the dtype asked."""


class ProfileFormatError(LayerScopeError):
    """A saved Profile JSON file is malformed or from an incompatible schema."""


class OnnxMappingError(LayerScopeError):
    """ONNX export, loading, ONNX Runtime session or profiling failed."""


class PlanError(LayerScopeError):
    """A compression plan is malformed, names nothing, or does not fit the model."""


class OutputError(LayerScopeError):
    """An output file cannot be written (checked before work) or its write failed (old file intact)."""


class ResourceError(LayerScopeError):
    """The work would exceed this machine's memory or a size limit; the message gives the estimate."""


class Cancelled(LayerScopeError):
    """Long work was cancelled by the user."""


class HistoryError(LayerScopeError):
    """The experiment history database cannot be opened, read or written (corrupt, locked, not ours)."""


class SweepError(LayerScopeError):
    """A sweep cannot run or continue: an unreachable Ray cluster, a run that is not a sweep, a failed worker."""


class BudgetError(LayerScopeError):
    """Budgets or a sweep's search space are malformed or cannot be checked with the data given."""


class ComparisonError(LayerScopeError):
    """The two models cannot be compared on these inputs (NaN/Inf, mismatched inputs, no common layers)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MAX_LINE = 300  # a quoted library error is one readable line; --verbose (-vv) logs the whole text


def plain(text: str) -> str:
    """``text`` without terminal colour codes (torch.onnx colours its banners)."""
    return _ANSI.sub("", text)


def _line(text: str) -> str:
    line = plain(text).strip().splitlines()[0]
    return line if len(line) <= _MAX_LINE else line[:_MAX_LINE - 1] + "…"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library messages run to pages), or its type name."""
    text = plain(str(exc)).strip()
    return _line(text) if text else type(exc).__name__


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception a library wrapped (``raise … from``): torch.onnx's ConversionError says
    "Failed to decompose the FX graph"; its cause says which view of which tensor failed."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def describe(exc: BaseException) -> str:
    """``TypeName: first line`` — how a wrapped library error is quoted inside a LayerScope message."""
    text = plain(str(exc)).strip()
    return f"{type(exc).__name__}: {_line(text)}" if text else type(exc).__name__
