"""One root exception for everything a user can cause; the CLI prints it without a traceback."""

from __future__ import annotations

__all__ = [
    "LayerScopeError",
    "ModelLoadError",
    "InputSpecError",
    "CaptureError",
    "ProfilingError",
    "HardwareProfileError",
    "ProfileFormatError",
    "OnnxMappingError",
    "PlanError",
    "OutputError",
    "UnsafeFileError",
    "ResourceError",
    "Cancelled",
    "ComparisonError",
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


class ComparisonError(LayerScopeError):
    """The two models cannot be compared on these inputs (NaN/Inf, mismatched inputs, no common layers)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library messages run to pages), or its type name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    """``TypeName: first line`` — how a wrapped library error is quoted inside a LayerScope message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
