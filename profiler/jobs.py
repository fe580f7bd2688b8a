"""The workflows the CLI and the desktop app share, one home each: profile, ONNX Runtime mapping,
compress (+ compare + diagnose), compare (+ diagnose), and opening a saved profile.

Each job is a work generator (yields ``Progress``, returns its result) that takes one typed
``ModelRequest`` and carries every field of it down to the core. The CLI drives a job with a
progress bar and prints its result; the app drives the same generator on a worker thread. Neither
face decides what a workflow does.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import PlanError
from .files.safeio import OutputFolder
from .files.serde import to_jsonable
from .files.source import LoadedModel, load_model
from .hardware import HardwareProfile, resolve_hardware
from .history import Record, profile_layers, profile_metrics, record_run
from .paired import busy_threads
from .pipeline import profile_model
from .profile import Profile
from .progress import Progress, Work
from .request import MODEL_HELP, ModelRequest
from .resources import threads

if TYPE_CHECKING:
    from .compression import CompressResult
    from .compression.plan import ResolvedSpec

__all__ = ["MODEL_HELP", "ModelRequest", "profile_job", "onnx_job", "compress_job", "compare_job", "open_profile_job",
           "open_run_job", "sweep_job"]

log = logging.getLogger(__name__)


def _hardware(req: ModelRequest) -> Work[HardwareProfile]:
    return resolve_hardware(req.hardware, "cuda" if req.device.startswith("cuda") else "cpu")


def _in_threads(job: Callable[..., Any]) -> Callable[..., Any]:
    """Run a job generator with ``req.threads`` torch threads, restored when it ends or is cancelled."""
    @functools.wraps(job)
    def run(req: ModelRequest, *args: Any, **kwargs: Any) -> Any:
        with threads(req.threads):
            return (yield from job(req, *args, **kwargs))
    return run


@_in_threads
def profile_job(req: ModelRequest, record: Record | None = None,
                on_loaded: Callable[[LoadedModel], None] | None = None) -> Work[Profile]:
    """Load, (calibrate,) capture, measure and classify every layer; recorded in the history when
    ``record`` says so. ``on_loaded``: called with the loaded model (the CLI keeps it for the Model
    Explorer export, which needs the module the profile measured)."""
    loaded = yield from req.loading(on_loaded)
    with busy_threads(req.threads, req.device, req.static) as said:
        hw = yield from _hardware(req)
        profile = yield from profile_model(loaded, hw, runs=req.runs, warmup=req.warmup, device=req.device, method=req.method,
                                           static=req.static)
    if said:
        profile = dataclasses.replace(profile, summary=dataclasses.replace(profile.summary, warnings=(*said, *profile.summary.warnings)))
    record_run(record, "profile", req.model or loaded.spec, loaded.module,
               lambda: {"config": {"request": to_jsonable(req)}, "metrics": profile_metrics(profile),
                        "layers": profile_layers(profile), "profile_json": profile.to_json()})
    return profile


def open_profile_job(path: str | Path) -> Work[Profile]:
    """A saved profile, read and checked (a 10,000-layer profile is 16 MB of JSON)."""
    yield Progress("load", 0, 1, str(path))
    profile = Profile.load(path)
    yield Progress("load", 1, 1, f"{len(profile.graph)} layers")
    return profile


@_in_threads
def onnx_job(req: ModelRequest, opt_level: str = "all", provider: str = "CPUExecutionProvider",
             onnx_path: str | Path | None = None, workdir: str | Path | OutputFolder | None = None):
    """Export ``req``'s model to ONNX (or take a plain ``onnx_path``: then only ``req``'s runs and
    warm-up count), profile it in ONNX Runtime at ``opt_level`` and map every compiled op back to
    its source layers."""
    from .capture import capture, capture_exported, run_and_locate_failure
    from .runtimes.onnx import map_onnx

    req.check()
    runs, warmup = req.runs, req.warmup
    if onnx_path is not None:
        return (yield from map_onnx(onnx_path=onnx_path, opt_level=opt_level, provider=provider, runs=runs, warmup=warmup,
                                    name=Path(onnx_path).name, workdir=workdir))
    loaded = yield from req.loading()
    run_and_locate_failure(loaded.module, loaded.inputs)  # a forward that raises is named as such, not as a capture failure
    if loaded.exported is not None:
        graph = capture_exported(loaded.exported, None, loaded.inputs).graph
    else:
        graph = capture(loaded.module, loaded.inputs, req.run_method).graph
    return (yield from map_onnx(loaded.module, loaded.inputs, graph, opt_level=opt_level, provider=provider,
                                runs=runs, warmup=warmup, name=loaded.name, workdir=workdir))


@_in_threads
def compress_job(req: ModelRequest, plan, data: str | Path | None = None, samples: int = 8, ort_int8: bool = False,
                 workdir: str | Path | OutputFolder | None = None, profile: Profile | None = None, threshold_db: float = 20.0,
                 range_factor: float = 10.0, on_loaded: Callable[[LoadedModel], None] | None = None,
                 record: Record | None = None, calib_data: str | Path | None = None) -> Work[CompressResult]:
    """Apply ``plan`` to a copy of the model, profile and time the copy, then compare activations
    layer by layer and diagnose. ``profile``: the reference profile when the caller already has one
    (the app); otherwise the model is profiled first with ``req``'s runs, warm-up and capture.
    ``on_loaded``: called with the loaded model before any work (the CLI checks room for
    model-sized outputs there). ``calib_data``: a data folder to fit activation ranges on (default: a seeded quarter
    of the samples, the rest measuring output and accuracy)."""
    from .compare import compare_models, diagnose
    from .compression import compress
    from .files.data import load_data_folder, samples_for

    req.check()
    if plan is None:
        raise PlanError("No plan to apply.")
    loaded = yield from req.loading(on_loaded)
    batches = samples_for(loaded, data, samples)
    calibration = load_data_folder(calib_data, loaded.inputs, loaded.input_names) if calib_data else None
    with busy_threads(req.threads, req.device) as said:  # the profile profile_job would take, and the pair, alike
        hw = profile.hardware if profile is not None else (yield from _hardware(req))
        if profile is None:
            profile = yield from profile_model(loaded, hw, runs=req.runs, warmup=req.warmup, method=req.run_method)
        result = yield from compress(loaded, profile, plan, batches, hw, runs=req.runs, ort_int8=ort_int8,
                                     workdir=workdir, warmup=req.warmup, method=req.run_method, calibration=calibration)
    if said:
        result = dataclasses.replace(result, warnings=(*said, *result.warnings))
    cmp = yield from compare_models(loaded.module, result.candidate, batches, f"{loaded.name} (float)",
                                    f"{loaded.name} (compressed)", method=req.run_method)
    diags = diagnose(cmp, profile.graph, result.resolved, loaded.module, range_factor=range_factor,
                     sqnr_threshold_db=threshold_db)
    result = dataclasses.replace(result, comparison=cmp, diagnostics=tuple(diags), threshold_db=threshold_db)
    record_run(record, "compress", req.model or loaded.spec, loaded.module, lambda: {
        "plan": result.plan, "config": {"request": to_jsonable(req), "data": str(data) if data else None, "samples": samples},
        "metrics": result.summary(),
        "layers": {d.layer_id: {"technique": d.technique, "latency_ms": d.latency_ms_after, "latency_ms_float": d.latency_ms_before,
                                "flops": d.flops_after, "weight_bytes": d.weight_bytes_after,
                                "weight_bytes_float": d.weight_bytes_before} for d in result.layers}})
    return result


@_in_threads
def compare_job(req: ModelRequest, plan=None, plan_b=None, plan_names: tuple[str, str] = ("plan A", "plan B"),
                against: str | None = None, data: str | Path | None = None, samples: int = 8, threshold_db: float = 20.0,
                range_factor: float = 10.0, calib_data: str | Path | None = None):
    """Compare the float model with ``plan`` applied (or ``plan`` against ``plan_b``, or the model
    against another model ``against`` with the same layer ids) layer by layer, and diagnose."""
    from .compare import compare_models, diagnose
    from .compression import apply_plan, resolve_plan
    from .files.data import load_data_folder, samples_for

    req.check()
    if plan is None and against is None:
        raise PlanError("Give --plan plan.json (float vs compressed), and optionally --plan-b, or --against OTHER_MODEL.")
    loaded = yield from req.loading()
    batches = samples_for(loaded, data, samples)
    calibration = load_data_folder(calib_data, loaded.inputs, loaded.input_names) if calib_data else None
    hw = yield from _hardware(req)
    profile = yield from profile_model(loaded, hw, runs=req.runs, warmup=req.warmup, method=req.run_method)  # selectors need bound/latency
    ref, ref_name = loaded.module, f"{loaded.name} (float)"
    said: list[str] = []
    resolved: list[ResolvedSpec] = []
    if plan_b is not None:
        ra, wa = resolve_plan(plan, profile)
        ref, _ = yield from apply_plan(loaded.module, profile.graph, ra, batches, wa, calibration)
        ref_name = f"{loaded.name} + {plan_names[0]}"
    if against is not None:
        other = load_model(against, [tuple(t.shape) for t in loaded.inputs], trust_file=req.trust_file, max_memory_bytes=0)
        cand, cand_name = other.module, other.name
    else:
        chosen, name = (plan_b, plan_names[1]) if plan_b is not None else (plan, plan_names[0])
        resolved, warnings = resolve_plan(chosen, profile)
        cand, applied = yield from apply_plan(loaded.module, profile.graph, resolved, batches, warnings, calibration)
        said = list(applied.warnings)
        cand_name = f"{loaded.name} + {name}"
    cmp = yield from compare_models(ref, cand, batches, ref_name, cand_name, method=req.run_method)
    if said:  # what applying the plan found (ties, weights left float, a constant output) belongs with the comparison
        cmp = dataclasses.replace(cmp, notes=(*cmp.notes, *said))
    return cmp, diagnose(cmp, profile.graph, resolved, loaded.module, range_factor=range_factor, sqnr_threshold_db=threshold_db)


def open_run_job(run_id: int, history: str | None = None):
    """A recorded run from the history database: (its profile, its sweep). A profile run gives its
    profile; a sweep (finished or interrupted) its result and reference profile; a compress run
    has no profile of its own stored and says so."""
    from .errors import HistoryError
    from .history.store import HistoryStore
    from .sweep import load_sweep

    yield Progress("load", 0, 1, f"run {run_id}")
    store = HistoryStore(history)
    try:
        run = store.run(run_id)
        if run.kind == "sweep":
            result, profile = load_sweep(store, run_id)
        else:
            text = store.profile_json(run_id)
            if text is None:
                raise HistoryError(f"Run {run_id} is a {run.kind} run: it stores its plan and numbers, not a profile "
                                   f"(`layerscope history show {run_id}`).")
            result, profile = None, Profile.from_json(text, f"run {run_id}'s profile")
    finally:
        store.close()
    yield Progress("load", 1, 1, run.kind)
    return profile, result


@_in_threads
def sweep_job(req: ModelRequest, options):
    """Search compression recipes under budgets (``sweep.SweepOptions``); see ``sweep.run_sweep``."""
    from .sweep import run_sweep

    return (yield from run_sweep(req, options))
