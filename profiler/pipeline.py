"""The profiling pipeline: capture -> static metrics -> timing -> roofline, as a generator that
yields Progress and returns the Profile."""

from __future__ import annotations

import datetime as _dt
import platform

import torch

from .capture import capture, capture_exported, run_and_locate_failure
from .errors import ProfilingError
from .graph import CaptureMethod
from .hardware import HardwareProfile, _cpu_name
from .metrics import layer_metrics
from .profile import SCHEMA_VERSION, ModelInfo, Profile, RunInfo
from .progress import Progress, Work
from .roofline import classify
from .source import LoadedModel
from .timing import measure
from .weights import weight_bytes

__all__ = ["profile_model"]


def _compute_dtype(model: torch.nn.Module) -> str:
    for p in model.parameters():
        if p.is_floating_point():
            return str(p.dtype).removeprefix("torch.")
    return "float32"


def profile_model(
    loaded: LoadedModel,
    hardware: HardwareProfile,
    runs: int = 20,
    warmup: int = 3,
    device: str = "cpu",
    method: CaptureMethod | None = None,
) -> Work[Profile]:
    """Capture, measure and classify every layer of ``loaded``; yields Progress, returns Profile."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ProfilingError("--device cuda: no CUDA device is available here; use --device cpu.")
    model = loaded.module.to(dev) if loaded.exported is None else loaded.module
    inputs = tuple(t.to(dev) for t in loaded.inputs)
    yield Progress("capture", 0, 3, "checking the model runs on the inputs")
    run_and_locate_failure(model, inputs)
    yield Progress("capture", 1, 3, "capturing the graph")
    if loaded.exported is not None:
        cap = capture_exported(loaded.exported, None, inputs, ["loaded from a saved torch.export program (.pt2)"])
    else:
        cap = capture(model, inputs, method)
    yield Progress("capture", 2, 3, f"{len(cap.graph)} layers via {cap.method.value}")
    metrics = {layer.id: layer_metrics(layer) for layer in cap.graph}
    yield Progress("capture", 3, 3, "static metrics computed")
    timing = yield from measure(cap, model, inputs, runs=runs, warmup=warmup)
    dtype = _compute_dtype(model)
    timed_on_target = hardware.kind == "measured" and hardware.device.split(":")[0] == dev.type
    roofline = {lid: classify(m, timing.layers[lid].latency_ms, hardware, dtype, timed_on_target) for lid, m in metrics.items()}
    wb = weight_bytes(model)
    info = ModelInfo(
        name=loaded.name,
        spec=loaded.spec,
        source_kind=loaded.kind,
        capture_method=cap.method,
        capture_notes=tuple(loaded.notes + cap.notes),
        input_shapes=tuple(tuple(int(s) for s in t.shape) for t in inputs),
        input_dtypes=tuple(str(t.dtype).removeprefix("torch.") for t in inputs),
        compute_dtype=dtype,
        total_params=wb.parameters,
        total_weight_bytes=wb.total,
    )
    from . import __version__

    run = RunInfo(
        date=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        platform=platform.platform(),
        cpu=_cpu_name(),
        layerscope_version=__version__,
    )
    return Profile(SCHEMA_VERSION, info, run, hardware, cap.graph, metrics, timing.layers, roofline, timing.summary)
