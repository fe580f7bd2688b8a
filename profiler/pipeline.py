"""The profiling pipeline: capture -> static metrics -> timing -> roofline, as a generator that
yields Progress and returns the Profile."""

from __future__ import annotations

import datetime as _dt
import platform

import torch
from torch import nn

from .capture import CaptureResult, capture, capture_exported, run_and_locate_failure
from .capture.eager import capture_eager
from .capture.weights import weight_bytes
from .errors import ProfilingError
from .files.source import LoadedModel
from .graph import CaptureMethod, LayerGraph, dtype_name
from .hardware import HardwareProfile
from .hardware.calibration import cpu_name
from .metrics import layer_metrics
from .profile import SCHEMA_VERSION, ModelInfo, Profile, RunInfo
from .progress import Progress, Work
from .roofline import classify
from .timing import TimingResult, TimingSummary, measure

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
    static: bool = False,
) -> Work[Profile]:
    """Capture, measure and classify every layer of ``loaded``; yields Progress, returns Profile.

    ``static``: no timing. Shapes, FLOPs, bytes, parameters and bound classes only, with the activation
    peak from the captured shapes. The graph is recorded from one eager forward (``capture_eager``)
    unless ``method`` asks for fx or export. On the meta device (``device="meta"``, or a model already there)
    nothing is allocated: a 7B-parameter decoder built on meta profiles in a few hundred MB."""
    dev, on_meta = _device(loaded, device, static)
    model = loaded.module.to(dev) if loaded.exported is None else loaded.module
    inputs = tuple(t.to(dev) for t in loaded.inputs)
    if method is CaptureMethod.EAGER and not static:
        raise ProfilingError("An eager capture records shapes only and cannot be timed: add --static, or capture with fx or export.")
    cap = yield from _capture(loaded, model, inputs, method, static)
    yield Progress("capture", 2, 3, f"{len(cap.graph)} layers via {cap.method.value}")
    metrics = {layer.id: layer_metrics(layer) for layer in cap.graph}
    yield Progress("capture", 3, 3, "static metrics computed")
    wb = weight_bytes(model)
    if static:
        timing = _static_timing(cap.graph, wb.total, dev)
    else:
        timing = yield from measure(cap, model, inputs, runs=runs, warmup=warmup)
    dtype = _compute_dtype(model)
    timed_on_target = hardware.kind == "measured" and hardware.device.split(":")[0] == dev.type
    roofline = {lid: classify(m, t.latency_ms if (t := timing.layers.get(lid)) else None, hardware, dtype, timed_on_target)
                for lid, m in metrics.items()}
    notes = [*loaded.notes, *cap.notes]
    if static:
        notes.append("static profile: shapes, FLOPs, bytes and bound classes; nothing was timed"
                     + (" (meta device: no weight was allocated and value checks were skipped)" if on_meta else ""))
    info = ModelInfo(
        name=loaded.name, spec=loaded.spec, source_kind=loaded.kind, capture_method=cap.method, capture_notes=tuple(notes),
        input_shapes=tuple(tuple(int(s) for s in t.shape) for t in inputs), input_dtypes=tuple(dtype_name(t.dtype) for t in inputs),
        compute_dtype=dtype, total_params=wb.parameters, total_weight_bytes=wb.total, submodule=loaded.submodule,
        model_input_shapes=loaded.model_input_shapes,
    )
    return Profile(SCHEMA_VERSION, info, _run_info(), hardware, cap.graph, metrics, timing.layers, roofline, timing.summary)


def _device(loaded: LoadedModel, device: str, static: bool) -> tuple[torch.device, bool]:
    """Where the model runs, and whether that is the meta device (a model built there, or asked for)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ProfilingError("--device cuda: no CUDA device is available here; use --device cpu.")
    on_meta = dev.type == "meta" or any(p.is_meta for p in loaded.module.parameters())
    if on_meta and not static:
        raise ProfilingError("The model is on the meta device: its tensors have no values, so nothing can be timed. "
                             "Profile it statically (--static).")
    return (torch.device("meta") if on_meta else dev), on_meta


def _capture(loaded: LoadedModel, model: nn.Module, inputs: tuple[torch.Tensor, ...], method: CaptureMethod | None,
             static: bool) -> Work[CaptureResult]:
    """One recorded eager forward (static profiles, --capture eager), else torch.fx with the torch.export fallback,
    or the loaded program itself; a forward that fails is named at its layer first."""
    if loaded.exported is None and (method is CaptureMethod.EAGER or (static and method is None)):
        yield Progress("capture", 1, 3, "recording one forward")
        return capture_eager(model, inputs)
    yield Progress("capture", 0, 3, "checking the model runs on the inputs")
    run_and_locate_failure(model, inputs)
    yield Progress("capture", 1, 3, "capturing the graph")
    if loaded.exported is not None:
        return capture_exported(loaded.exported, None, inputs, ["loaded from a saved torch.export program (.pt2)"])
    return capture(model, inputs, method)


def _run_info() -> RunInfo:
    from . import __version__

    return RunInfo(date=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), torch_version=torch.__version__,
                   python_version=platform.python_version(), platform=platform.platform(), cpu=cpu_name(),
                   layerscope_version=__version__)


def _static_timing(graph: LayerGraph, weights: int, dev: torch.device) -> TimingResult:
    """The summary of a profile that timed nothing: runs 0, no layer timings, and the activation peak
    from the captured shapes (``LayerGraph.activation_peak_bytes``: no forward is run for it)."""
    act = graph.activation_peak_bytes()
    return TimingResult({}, TimingSummary(
        device=str(dev), timer="none (static profile)", runs=0, warmup=0, threads=torch.get_num_threads(),
        end_to_end_ms=0.0, end_to_end_p25_ms=0.0, end_to_end_p75_ms=0.0, sum_of_layer_medians_ms=0.0, glue_ms=0.0,
        weight_bytes=weights, peak_activation_bytes=act, peak_memory_bytes=weights + act,
        peak_memory_source="weights + peak of live layer outputs from the captured shapes (static profile)",
    ))
