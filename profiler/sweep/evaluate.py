"""One sweep candidate, measured: apply the recipe's plan to a copy of the model, then its stored
size, peak memory, output quality (SQNR, cosine, top-1 with labels), eager latency on this machine
(interleaved with the float model) and the roofline latency on every device target.

The same ``Evaluator`` runs in the sweep's own process, in a local process pool and in Ray actors.
Timing is honest across all of them: a host-wide lock (``HostTimingLock``) lets any number of
candidates compress and compare at once but times one candidate at a time, with nothing else of
the sweep running on the host meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..compression.apply import apply_plan
from ..compression.ort_int8 import OrtInt8Result, quantize_with_ort
from ..compression.plan import ResolvedSpec, resolve_plan
from ..compression.specs import QuantizeParams
from ..errors import LayerScopeError, OnnxMappingError, PlanError, describe
from ..files.data import SampleSet, samples_for
from ..files.serde import to_jsonable
from ..files.source import LoadedModel
from ..files.workspace import work_dir
from ..hardware import HardwareProfile
from ..paired import time_pair
from ..pipeline import profile_model
from ..profile import Profile
from ..progress import drive
from ..request import ModelRequest
from ..resources import estimate_activation_bytes, other_load_now, threads
from .budgets import resolve_targets
from .space import Recipe

__all__ = ["SweepSetup", "Evaluator", "HostTimingLock", "target_latency_ms"]

log = logging.getLogger(__name__)


def default_lock_path() -> str:
    return str(Path(tempfile.gettempdir()) / f"layerscope-timing-{os.getuid()}.lock")


class HostTimingLock:
    """A readers-writer lock over a file, shared by every process of this user on this host.
    Compression work holds it shared; timing holds it exclusive, so a timed candidate never runs
    next to another candidate's work. A turnstile file stops a stream of shared holders from
    starving a timer."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or default_lock_path()

    @contextlib.contextmanager
    def _locked(self, suffix: str, mode: int) -> Iterator[None]:
        fd = os.open(self.path + suffix, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._locked(".turnstile", fcntl.LOCK_EX):
            pass  # wait while a timer is queued
        with self._locked("", fcntl.LOCK_SH):
            yield

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[float]:
        """Yields the seconds it waited for the other holders."""
        t0 = time.perf_counter()
        with self._locked(".turnstile", fcntl.LOCK_EX), self._locked("", fcntl.LOCK_EX):
            yield time.perf_counter() - t0


@dataclass(frozen=True)
class SweepSetup:
    """Everything a worker needs to rebuild the sweep's context (picklable, plain data)."""

    request: ModelRequest
    data: str | None
    samples: int
    profile_json: str  # the reference profile (selectors need its bound classes and latencies)
    sensitive: tuple[str, ...]  # compressible layers, most sensitive first
    targets: tuple[str, ...]
    runs: int = 20
    warmup: int = 3
    compute_threads: int | None = None  # torch threads while compressing (cores ÷ workers)
    timing_threads: int | None = None  # torch threads while timing (alone on the host)
    lock_path: str = field(default_factory=default_lock_path)
    ort: bool = True  # also measure real ONNX Runtime int8 speed where the plan is int8 (weights) everywhere


def target_latency_ms(profile: Profile, hw: HardwareProfile, weight_bytes_after: dict[str, int] | None = None) -> float:
    """Roofline latency of ``profile``'s model on ``hw``: Σ over layers of max(FLOPs / peak, bytes /
    bandwidth), a layer's weights read at ``weight_bytes_after`` (their compressed storage) where given."""
    dtype = profile.model.compute_dtype
    total = 0.0
    for lid, m in profile.metrics.items():
        moved = m.bytes_moved
        if weight_bytes_after is not None and lid in weight_bytes_after:
            moved = max(0, moved - m.weight_bytes + weight_bytes_after[lid])
        total += hw.roof_ms(m.flops or 0, moved, dtype)
    return total


def ort_expressible(resolved: list[ResolvedSpec]) -> bool:
    """Whether ONNX Runtime's int8 quantizer runs this plan for real: int8 quantisation only."""
    return bool(resolved) and all(isinstance(r.params, QuantizeParams) and r.params.bits == 8 for r in resolved)


class Evaluator:
    """Loads the model, data and reference profile once; ``evaluate`` measures one recipe."""

    def __init__(self, setup: SweepSetup, loaded: LoadedModel | None = None, samples: SampleSet | None = None,
                 profile: Profile | None = None) -> None:
        """``loaded``, ``samples``, ``profile``: already in this process (the sweep's own); else built from ``setup``."""
        self.setup = setup
        if loaded is None:
            with threads(setup.compute_threads):
                loaded = setup.request.load()
        self.loaded = loaded
        self.samples = samples if samples is not None else samples_for(self.loaded, setup.data, setup.samples)
        self.profile = profile if profile is not None else Profile.from_json(setup.profile_json, "sweep reference profile")
        self.targets = resolve_targets(setup.targets)
        self.lock = HostTimingLock(setup.lock_path)
        self._reference_estimate: dict[str, float] = {}
        for t in self.targets:
            if t.hardware is not None:
                self._reference_estimate[t.name] = target_latency_ms(self.profile, t.hardware)
        # a weight technique leaves activations as they are: the float model's peak, measured during its timed
        # run; channel pruning changes them, and the candidate's peak is then estimated from a shape-only run
        self._activation_ref: int | None = None if self.profile.static else self.profile.summary.peak_activation_bytes

    def evaluate(self, recipe: dict[str, Any]) -> dict[str, Any]:
        """The candidate's record: recipe, plan, metrics, warnings; or ``error`` (a recipe that does
        not apply to this model, e.g. compute-bound when no layer is), recorded so a resume skips it."""
        r = Recipe.from_dict(recipe)
        t0 = time.perf_counter()
        try:
            plan = r.plan(self.profile, list(self.setup.sensitive))
            out: dict[str, Any] = {"recipe": r.to_dict(), "label": r.key, "plan": to_jsonable_plan(plan)}
            with self.lock.shared(), threads(self.setup.compute_threads):
                resolved, warnings = resolve_plan(plan, self.profile)
                candidate, result = drive(apply_plan(self.loaded.module, self.profile.graph, resolved, self.samples, warnings))
                if not result.weights and not result.channels:
                    raise PlanError("the recipe changed no layer of this model")
                structural = any(s.params.structural for s in resolved)
                after_profile = self.profile
                if structural and any(t.hardware is not None for t in self.targets):  # FLOPs and bytes changed: capture again
                    cand_loaded = LoadedModel(f"{self.loaded.name} (candidate)", self.loaded.spec, self.loaded.kind, candidate,
                                              self.loaded.inputs)
                    after_profile = drive(profile_model(cand_loaded, self.profile.hardware, static=True))
                act = self._activation_ref
                if structural or act is None:
                    act = estimate_activation_bytes(candidate, [(tuple(x.shape), x.dtype) for x in self.loaded.inputs])
            load, waited, paired, ort = self._time(candidate, resolved)
        except LayerScopeError as exc:
            return {"recipe": r.to_dict(), "label": r.key, "error": describe(exc)}
        except Exception as exc:  # one recipe failing inside a library must not end the sweep: it is recorded as failed
            log.warning("candidate %r failed", r.key, exc_info=True)
            return {"recipe": r.to_dict(), "label": r.key, "error": f"failed inside {type(exc).__module__.split('.')[0]}: {describe(exc)}"}
        o = result.output
        stored = result.stored_weight_bytes({lid: m.weight_bytes for lid, m in after_profile.metrics.items()})
        targets: dict[str, dict[str, Any]] = {}
        for t in self.targets:
            if t.hardware is None:
                targets[t.name] = {"latency_ms": paired.b_ms, "latency_ms_reference": paired.a_ms, "latency_ratio": paired.ratio,
                                   "latency_ratio_low": paired.ratio_low, "latency_ratio_high": paired.ratio_high,
                                   "latency_verdict": paired.verdict, "measured": True, "other_load": load}
                if ort is not None and not isinstance(ort, str):
                    targets[t.name].update(ort_float_ms=ort.float_ms, ort_int8_ms=ort.int8_ms, ort_ratio=ort.int8_ms / ort.float_ms,
                                           ort_batch=ort.batch_size)
            else:
                est = target_latency_ms(after_profile, t.hardware, stored)
                ref = self._reference_estimate[t.name]
                targets[t.name] = {"latency_ms": est, "latency_ms_reference": ref, "latency_ratio": est / ref if ref else math.nan,
                                   "measured": False}
        top1_drop = None
        if o.accuracy_reference is not None and o.accuracy_candidate is not None:
            top1_drop = 100.0 * (o.accuracy_reference - o.accuracy_candidate)
        out["metrics"] = {
            "size_bytes": result.size_bytes_after, "size_bytes_reference": result.size_bytes_before,
            "size_ratio": result.size_ratio,
            "peak_memory_bytes": result.size_bytes_after + act if act is not None else None,
            "output_sqnr_db": o.sqnr_db, "output_cosine": o.cosine, "top1": o.accuracy_candidate,
            "top1_reference": o.accuracy_reference, "top1_drop_points": top1_drop,
            "latency_ms": paired.b_ms, "latency_ms_reference": paired.a_ms, "latency_ratio": paired.ratio,
            "simulated": result.simulated, "layers_compressed": len({c.layer_id for c in result.weights}) + len(result.channels),
            "targets": targets, "timing_waited_s": waited, "seconds": time.perf_counter() - t0,
            "samples": o.samples, "data": o.data_source,
        }
        out["warnings"] = list(result.warnings) + ([f"ONNX Runtime int8 not measured: {ort}"] if isinstance(ort, str) else [])
        return out


    def _time(self, candidate: nn.Module, resolved: list[ResolvedSpec]):
        """Alone on the host (``HostTimingLock``): the float model and the candidate, interleaved, and for an
        int8 plan ONNX Runtime's float and int8 sessions. Returns (other load, seconds waited for the lock,
        float ms, candidate ms, the ORT result or why there is none)."""
        with self.lock.exclusive() as waited, threads(self.setup.timing_threads):
            load = other_load_now()
            paired = time_pair(self.loaded.module, candidate, self.loaded.inputs, runs=self.setup.runs, warmup=self.setup.warmup)
            ort: OrtInt8Result | str | None = None
            if self.setup.ort and ort_expressible(resolved):  # export, quantise and time float vs int8 sessions
                try:
                    with work_dir("sweep-ort") as folder:
                        ort = drive(quantize_with_ort(self.loaded.module, self.profile.graph, resolved, self.samples, folder,
                                                      runs=self.setup.runs))
                except OnnxMappingError as exc:  # an extra measurement: its failure is a warning, not a failed candidate
                    ort = describe(exc)
        return load, waited, paired, ort


def to_jsonable_plan(plan) -> dict[str, Any]:
    return json.loads(plan.to_json())


_EVALUATOR: Evaluator | None = None


def worker_init(setup: SweepSetup) -> None:
    """A pool worker's initializer: build the context once per process."""
    global _EVALUATOR
    _EVALUATOR = Evaluator(setup)


def worker_evaluate(recipe: dict[str, Any]) -> dict[str, Any]:
    assert _EVALUATOR is not None, "worker_init did not run"
    return to_jsonable(_EVALUATOR.evaluate(recipe))
