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
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import LayerScopeError, PlanError
from .graph import CaptureMethod
from .hardware import HardwareProfile, resolve_hardware
from .pipeline import profile_model
from .profile import Profile
from .progress import Progress, Work
from .resources import other_load_now, parse_device, threads
from .source import LoadedModel, load_model, parse_dtype, parse_input_shapes, submodule_of
from .timing import BUSY_LOAD

if TYPE_CHECKING:
    from .compression.plan import ResolvedSpec

__all__ = ["MODEL_HELP", "ModelRequest", "CompressResult", "profile_job", "onnx_job", "compress_job", "compare_job", "open_profile_job"]

log = logging.getLogger(__name__)


def _model_help() -> str:
    from .zoo import ZOO

    return (f"zoo name ({', '.join(ZOO)}), path/to/file.py:factory, or a .pt2 file (default: resnet18). "
            "A file.py:factory is Python code and runs: use only files you trust. A .pt2 is opened without running "
            "code from it (see --trust-file).")


MODEL_HELP = _model_help()


@dataclass(frozen=True)
class ModelRequest:
    """Which model, on which inputs, measured how: everything the CLI's model options and the app's
    Open-model dialog say, in one place."""

    model: str | None = None  # zoo name, file.py:factory or .pt2; None = the default model
    input_shape: str | None = None  # "1,3,224,224"; several inputs separated by ";"; None = the model's own
    dtype: str | None = None  # cast weights and float inputs; None = the model's own
    runs: int = 20
    warmup: int = 3
    device: str = "cpu"
    hardware: str = "this"  # "this" (calibrated here), a device profile name, or a .json file
    capture: str | None = None  # "fx", "export" or "eager" (static only); None = fx with export as fallback, eager when static
    trust_file: bool = False  # a .pt2 may run code when loaded: only when the user said so
    max_memory_gib: float | None = None  # activation-memory limit; None = what is available now, 0 = off
    threads: int | None = None  # torch intra-op threads while the job runs; None = torch's default
    static: bool = False  # profile without timing (shapes, FLOPs, bytes, bound classes); the only mode on --device meta
    submodule: str | None = None  # work on this named submodule, with the inputs a forward of the whole model gives it

    def check(self) -> None:
        """Everything that can be wrong with the request itself, before any work."""
        if self.runs < 1 or self.warmup < 0:
            raise LayerScopeError("--runs must be >= 1 and --warmup >= 0.")
        if self.capture not in (None, "fx", "export", "eager"):
            raise LayerScopeError(f"capture {self.capture!r}: use fx, export or eager.")
        if self.capture == "eager" and not self.static:
            raise LayerScopeError("--capture eager records shapes only and cannot be timed: add --static, or capture with fx or export.")
        if self.max_memory_gib is not None and not (self.max_memory_gib >= 0 and self.max_memory_gib != float("inf")):
            raise LayerScopeError("--max-memory must be a number of GiB >= 0 (0 turns the memory check off).")
        if parse_device(self.device).type == "meta" and not self.static:
            raise LayerScopeError("--device meta has no values to time: add --static (a profile of shapes, FLOPs and "
                                  "bytes that allocates no weights).")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise LayerScopeError(f"--threads {self.threads}: use a number of threads from 1 to 1024.")

    @property
    def method(self) -> CaptureMethod | None:
        return {"fx": CaptureMethod.FX, "export": CaptureMethod.EXPORT, "eager": CaptureMethod.EAGER}.get(self.capture or "")

    @property
    def run_method(self) -> CaptureMethod | None:
        """The capture for work that runs the graph (timing, activations, ONNX mapping): an eager
        capture records shapes only, so a static profile's Apply captures the default way."""
        return None if self.method is CaptureMethod.EAGER else self.method

    def load(self) -> LoadedModel:
        self.check()
        limit = None if self.max_memory_gib is None else int(self.max_memory_gib * 2**30)
        loaded = load_model(self.model, parse_input_shapes(self.input_shape), parse_dtype(self.dtype),
                            trust_file=self.trust_file, max_memory_bytes=limit)
        return submodule_of(loaded, self.submodule) if self.submodule else loaded

    @staticmethod
    def add_arguments(p, required: bool = False, runs: int = 20, warmup: int = 3, device: bool = True, static: bool = False) -> None:
        """The request's options on an argparse parser (``layerscope`` and ``layerscope-gui`` alike);
        ``runs``/``warmup`` are the command's defaults (the help says them); ``device`` False for
        commands that measure on the CPU only; ``static`` for commands that can skip timing (profile, gui)."""
        from .hardware import device_profile_names

        p.add_argument("model", nargs=None if required else "?", default=None, help=MODEL_HELP)
        p.add_argument("--trust-file", action="store_true",
                       help="load a .pt2 even if it asks to run code (pickled objects, compiled libraries, guards); only for "
                            "files from a source you trust, like trust_remote_code")
        p.add_argument("--max-memory", type=float, metavar="GIB",
                       help="refuse to run when a forward on --input-shape is estimated to need more activation memory "
                            "(default: the memory available now; 0 turns the check off)")
        p.add_argument("--input-shape", help="input shape, e.g. 1,3,224,224; several inputs separated by ';'")
        p.add_argument("--dtype", choices=["float32", "float16", "bfloat16", "float64"], help="cast weights and float inputs")
        p.add_argument("--runs", type=int, default=runs, help=f"timed runs per layer (default {runs})")
        p.add_argument("--warmup", type=int, default=warmup, help=f"untimed warm-up runs (default {warmup})")
        if device:
            p.add_argument("--device", default="cpu",
                           help="cpu or cuda (CUDA events are used on a GPU); meta with --static: nothing is allocated")
        p.add_argument("--hardware", default="this",
                       help=f"roofline: 'this' (calibrated here, cached) or a device profile ({', '.join(device_profile_names())}) "
                            "or a .json file")
        p.add_argument("--capture", choices=["fx", "export", "eager"] if static else ["fx", "export"],
                       help="force a capture method (default: fx, export as fallback"
                            + ("; a --static profile records one eager forward, which needs no tracing)" if static else ")"))
        if static:
            p.add_argument("--static", action="store_true",
                           help="no timing: shapes, FLOPs, bytes, parameters and bound classes, ranked by FLOPs; with "
                                "--device meta (a factory that builds on torch.device('meta')) no weight is allocated")
        p.add_argument("--submodule", metavar="NAME",
                       help="work on one named submodule (e.g. backbone, model.decoder), fed the inputs a forward of the whole "
                            "model gives it: a detection model without its pre- and post-processing")
        p.add_argument("--threads", type=int, metavar="N",
                       help=f"torch intra-op threads while measuring (default: torch's, {torch.get_num_threads()} here); "
                            "1 keeps rankings steady on a busy machine")

    @classmethod
    def from_args(cls, args: Any, spec: str | None = None) -> ModelRequest:
        """The request an argparse namespace (from ``add_arguments``) describes, checked."""
        req = cls(spec if spec is not None else getattr(args, "model", None), getattr(args, "input_shape", None),
                  getattr(args, "dtype", None), runs=getattr(args, "runs", 20), warmup=getattr(args, "warmup", 3),
                  device=getattr(args, "device", "cpu"), hardware=getattr(args, "hardware", "this"),
                  capture=getattr(args, "capture", None), trust_file=getattr(args, "trust_file", False),
                  max_memory_gib=getattr(args, "max_memory", None), threads=getattr(args, "threads", None),
                  static=getattr(args, "static", False), submodule=getattr(args, "submodule", None))
        req.check()
        return req

    @classmethod
    def for_profile(cls, profile: Profile, trust_file: bool = False, **changes: Any) -> ModelRequest:
        """The request that loads ``profile``'s model again, on the inputs it was profiled with."""
        m = profile.model
        shapes = m.model_input_shapes if m.submodule else m.input_shapes  # a part is found again in the whole model
        req = cls(m.spec, ";".join(",".join(map(str, s)) for s in shapes) or None,
                  None if m.compute_dtype == "float32" else m.compute_dtype, trust_file=trust_file, max_memory_gib=0,
                  submodule=m.submodule)
        return dataclasses.replace(req, **changes)


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
def profile_job(req: ModelRequest) -> Work[Profile]:
    """Load, (calibrate,) capture, measure and classify every layer."""
    req.check()
    yield Progress("load", 0, 1, req.model or "default model")
    loaded = req.load()
    yield Progress("load", 1, 1, loaded.name)
    log.info("loaded %s (%s) with inputs %s", loaded.name, loaded.kind, [tuple(t.shape) for t in loaded.inputs])
    n = torch.get_num_threads()
    busy = other_load_now() if req.threads is None and n > 1 and req.device.startswith("cpu") and not req.static else None
    one = busy is not None and busy > BUSY_LOAD  # every parallel op would wait for a preempted thread
    with threads(1 if one else None):
        hw = yield from _hardware(req)
        profile = yield from profile_model(loaded, hw, runs=req.runs, warmup=req.warmup, device=req.device, method=req.method,
                                           static=req.static)
    if one:
        why = (f"the machine was busy before timing (other processes used {busy:.0%} of the CPUs): timed at 1 thread "
               f"instead of {n}, because at {n} threads every parallel op waits for a preempted thread and the ranking is "
               f"lost; --threads {n} to insist")
        log.warning("%s", why)
        profile = dataclasses.replace(profile, summary=dataclasses.replace(profile.summary, warnings=(why, *profile.summary.warnings)))
    return profile


def open_profile_job(path: str | Path) -> Work[Profile]:
    """A saved profile, read and checked (a 10,000-layer profile is 16 MB of JSON)."""
    yield Progress("load", 0, 1, str(path))
    profile = Profile.load(path)
    yield Progress("load", 1, 1, f"{len(profile.graph)} layers")
    return profile


@_in_threads
def onnx_job(req: ModelRequest, opt_level: str = "all", provider: str = "CPUExecutionProvider",
             onnx_path: str | Path | None = None, workdir: str | Path | None = None):
    """Export ``req``'s model to ONNX (or take a plain ``onnx_path``: then only ``req``'s runs and
    warm-up count), profile it in ONNX Runtime at ``opt_level`` and map every compiled op back to
    its source layers."""
    from .capture import capture, capture_exported, run_and_locate_failure
    from .onnx import map_onnx

    req.check()
    runs, warmup = req.runs, req.warmup
    if onnx_path is not None:
        return (yield from map_onnx(onnx_path=onnx_path, opt_level=opt_level, provider=provider, runs=runs, warmup=warmup,
                                    name=Path(onnx_path).name, workdir=workdir))
    yield Progress("load", 0, 1, req.model or "default model")
    loaded = req.load()
    yield Progress("load", 1, 1, loaded.name)
    run_and_locate_failure(loaded.module, loaded.inputs)  # a forward that raises is named as such, not as a capture failure
    if loaded.exported is not None:
        graph = capture_exported(loaded.exported, None, loaded.inputs).graph
    else:
        graph = capture(loaded.module, loaded.inputs, req.run_method).graph
    return (yield from map_onnx(loaded.module, loaded.inputs, graph, opt_level=opt_level, provider=provider,
                                runs=runs, warmup=warmup, name=loaded.name, workdir=workdir))


@dataclass(frozen=True)
class CompressResult:
    """What a compress job found: the reference profile, the outcome (candidate, its profile, the
    report), and the layer-by-layer activation comparison with its diagnostics."""

    profile: Profile
    outcome: Any  # CompressionOutcome
    comparison: Any  # ActivationComparison
    diagnostics: list
    inputs: tuple  # the example inputs both models ran on (to export the candidate)
    threshold_db: float = 20.0  # the SQNR under which a layer counts as broken (the diagnostics used it too)

    def to_json(self) -> str:
        """The report, the activation comparison and the diagnostics, with every summary line the CLI
        prints as data under ``summary``."""
        from .serde import to_jsonable

        rep = self.outcome.report
        res = rep.result
        out = res.output
        summary = {
            "size_bytes_before": res.model_bytes_before, "size_bytes_after": res.model_bytes_after, "size_ratio": res.size_ratio,
            "latency_ms_before": rep.latency_ms_before, "latency_ms_after": rep.latency_ms_after, "latency_ratio": rep.latency_ratio,
            "simulated": res.simulated, "flops_before": rep.flops_before, "flops_after": rep.flops_after,
            "output_sqnr_db": out.sqnr_db, "output_cosine": out.cosine, "output_max_abs_error": out.max_abs_error,
            "outputs_sqnr_db": dict(out.leaves),
            "accuracy_before": out.accuracy_reference, "accuracy_after": out.accuracy_candidate, "warnings": list(res.warnings),
            "ort_int8_speedup": rep.ort.speedup if rep.ort is not None else None,
            "not_compressed": res.not_compressed_text(), "not_compressed_bytes": sum(w.bytes for w in res.not_compressed),
            "activations": self.comparison.summary(self.threshold_db),
        }
        return json.dumps({**json.loads(rep.to_json()), "comparison": to_jsonable(self.comparison),
                           "diagnostics": to_jsonable(self.diagnostics), "summary": to_jsonable(summary)}, indent=1)


@_in_threads
def compress_job(req: ModelRequest, plan, data: str | Path | None = None, samples: int = 8, ort_int8: bool = False,
                 workdir: str | Path | None = None, profile: Profile | None = None, threshold_db: float = 20.0,
                 range_factor: float = 10.0, on_loaded: Callable[[LoadedModel], None] | None = None) -> Work[CompressResult]:
    """Apply ``plan`` to a copy of the model, profile and time the copy, then compare activations
    layer by layer and diagnose. ``profile``: the reference profile when the caller already has one
    (the app); otherwise the model is profiled first with ``req``'s runs, warm-up and capture.
    ``on_loaded``: called with the loaded model before any work (the CLI checks room for
    model-sized outputs there)."""
    from .compare import compare_models, diagnose
    from .compression import compress
    from .data import samples_for

    req.check()
    if plan is None:
        raise PlanError("No plan to apply.")
    yield Progress("load", 0, 1, req.model or "default model")
    loaded = req.load()
    yield Progress("load", 1, 1, loaded.name)
    if on_loaded is not None:
        on_loaded(loaded)
    batches = samples_for(loaded, data, samples)
    hw = profile.hardware if profile is not None else (yield from _hardware(req))
    if profile is None:
        profile = yield from profile_model(loaded, hw, runs=req.runs, warmup=req.warmup, method=req.run_method)
    outcome = yield from compress(loaded, profile, plan, batches, hw, runs=req.runs, ort_int8=ort_int8,
                                  workdir=Path(workdir) if workdir else None, warmup=req.warmup, method=req.run_method)
    cmp = yield from compare_models(loaded.module, outcome.candidate, batches, f"{loaded.name} (float)",
                                    f"{loaded.name} (compressed)", method=req.run_method)
    diags = diagnose(cmp, profile.graph, outcome.report.resolved, loaded.module, range_factor=range_factor,
                     sqnr_threshold_db=threshold_db)
    return CompressResult(profile, outcome, cmp, diags, tuple(loaded.inputs), threshold_db)


@_in_threads
def compare_job(req: ModelRequest, plan=None, plan_b=None, plan_names: tuple[str, str] = ("plan A", "plan B"),
                against: str | None = None, data: str | Path | None = None, samples: int = 8, threshold_db: float = 20.0,
                range_factor: float = 10.0):
    """Compare the float model with ``plan`` applied (or ``plan`` against ``plan_b``, or the model
    against another model ``against`` with the same layer ids) layer by layer, and diagnose."""
    from .compare import compare_models, diagnose
    from .compression import apply_plan, resolve_plan
    from .data import samples_for

    req.check()
    if plan is None and against is None:
        raise PlanError("Give --plan plan.json (float vs compressed), and optionally --plan-b, or --against OTHER_MODEL.")
    yield Progress("load", 0, 1, req.model or "default model")
    loaded = req.load()
    yield Progress("load", 1, 1, loaded.name)
    batches = samples_for(loaded, data, samples)
    hw = yield from _hardware(req)
    profile = yield from profile_model(loaded, hw, runs=req.runs, warmup=req.warmup, method=req.run_method)  # selectors need bound/latency
    ref, ref_name = loaded.module, f"{loaded.name} (float)"
    said: list[str] = []
    resolved: list[ResolvedSpec] = []
    if plan_b is not None:
        ra, wa = resolve_plan(plan, profile)
        ref, _ = yield from apply_plan(loaded.module, profile.graph, ra, batches, wa)
        ref_name = f"{loaded.name} + {plan_names[0]}"
    if against is not None:
        other = load_model(against, [tuple(t.shape) for t in loaded.inputs], trust_file=req.trust_file, max_memory_bytes=0)
        cand, cand_name = other.module, other.name
    else:
        chosen, name = (plan_b, plan_names[1]) if plan_b is not None else (plan, plan_names[0])
        resolved, warnings = resolve_plan(chosen, profile)
        cand, applied = yield from apply_plan(loaded.module, profile.graph, resolved, batches, warnings)
        said = list(applied.warnings)
        cand_name = f"{loaded.name} + {name}"
    cmp = yield from compare_models(ref, cand, batches, ref_name, cand_name, method=req.run_method)
    if said:  # what applying the plan found (ties, weights left float, a constant output) belongs with the comparison
        cmp = dataclasses.replace(cmp, notes=(*cmp.notes, *said))
    return cmp, diagnose(cmp, profile.graph, resolved, loaded.module, range_factor=range_factor, sqnr_threshold_db=threshold_db)
