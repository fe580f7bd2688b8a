"""LayerScope headless core (import as ``layerscope.profiler``). Never imports Qt.

    from layerscope.profiler import load_model, resolve_hardware, profile_model, drive
    loaded = load_model("resnet18")
    hw = drive(resolve_hardware(None))          # this machine, calibrated once and cached
    profile = drive(profile_model(loaded, hw))
    for row in profile.ranked(10): ...
"""

__version__ = "0.1.0"

import logging

# A library stays quiet unless its user configures logging (``layerscope -v`` does).
logging.getLogger("layerscope").addHandler(logging.NullHandler())

from .errors import (  # noqa: E402
    Cancelled,
    CaptureError,
    HardwareProfileError,
    InputSpecError,
    LayerScopeError,
    ModelLoadError,
    OnnxMappingError,
    PlanError,
    ProfileFormatError,
    ProfilingError,
)
from .files.source import LoadedModel, load_model  # noqa: E402
from .files.zoo import ZOO, zoo_names  # noqa: E402
from .graph import CaptureMethod, Layer, LayerGraph, SourceLocation, TensorMeta  # noqa: E402
from .hardware import HardwareProfile, calibrate, device_profile_names, load_device_profile, resolve_hardware  # noqa: E402
from .metrics import LayerMetrics, layer_metrics  # noqa: E402
from .pipeline import profile_model  # noqa: E402
from .profile import LayerRow, Profile  # noqa: E402
from .progress import Progress, drive  # noqa: E402
from .roofline import Bound, RooflinePoint, classify  # noqa: E402
from .timing import LayerTiming, TimingSummary  # noqa: E402

__all__ = [
    "__version__", "LayerScopeError", "CaptureError", "Cancelled", "HardwareProfileError", "InputSpecError",
    "ModelLoadError", "OnnxMappingError", "PlanError", "ProfileFormatError", "ProfilingError", "CaptureMethod", "Layer", "LayerGraph",
    "SourceLocation", "TensorMeta", "HardwareProfile", "calibrate", "device_profile_names", "load_device_profile",
    "resolve_hardware", "LayerMetrics", "layer_metrics", "Progress", "drive", "LayerRow", "Profile", "profile_model",
    "Bound", "RooflinePoint", "classify", "LoadedModel", "load_model", "LayerTiming", "TimingSummary", "ZOO", "zoo_names",
]
