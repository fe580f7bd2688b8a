"""The whole compress job: validate the plan, apply it to a copy, profile the copy, time reference
and candidate end to end (interleaved), and optionally measure real int8 speed through ORT.

    outcome = drive(compress(loaded, profile, plan, samples, hardware))
    outcome.report.result.size_ratio, outcome.report.latency_ratio, outcome.profile  # candidate profile
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import SampleSet
from ..errors import OnnxMappingError
from ..format import fmt_bytes
from ..graph import CaptureMethod
from ..hardware import HardwareProfile
from ..pipeline import profile_model
from ..profile import Profile
from ..progress import Progress, Work
from ..resources import MEMORY_HEADROOM, available_memory_bytes, untouched
from ..safeio import OutputFolder
from ..serde import to_jsonable
from ..source import LoadedModel
from ..workspace import work_dir
from .apply import CompressionResult, apply_plan, model_bytes, pruned_copy
from .ort_int8 import OrtInt8Result, quantize_with_ort
from .plan import CompressionPlan, ResolvedSpec, resolve_plan

__all__ = ["LayerDelta", "CompressionReport", "CompressionOutcome", "compress", "time_pair"]

ORT_INT8_MEMORY_FACTOR = 5  # ORT's int8 path peaked at ~4.5× the weights (export, calibration, two sessions)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerDelta:
    layer_id: str
    technique: str  # "" when the plan did not touch the layer (it may still change: coupled pruning)
    latency_ms_before: float | None  # None when the reference profile is static (nothing was timed)
    latency_ms_after: float | None  # None when the layer is gone from the candidate
    flops_before: int | None
    flops_after: int | None
    weight_bytes_before: int
    weight_bytes_after: int


@dataclass(frozen=True)
class CompressionReport:
    model: str
    plan: dict  # the plan as given (JSON form)
    resolved: tuple[ResolvedSpec, ...]
    result: CompressionResult
    latency_ms_before: float  # end-to-end eager median, reference and candidate interleaved
    latency_ms_after: float
    latency_runs: int
    warmup_runs: int
    capture_method: str  # how both profiles were captured (torch.fx / torch.export)
    flops_before: int
    flops_after: int
    layers: tuple[LayerDelta, ...]
    ort: OrtInt8Result | None

    @property
    def latency_ratio(self) -> float:
        return self.latency_ms_after / self.latency_ms_before if self.latency_ms_before else float("nan")

    def to_json(self) -> str:
        return json.dumps(to_jsonable(self), indent=1)


@dataclass
class CompressionOutcome:
    candidate: nn.Module
    profile: Profile  # of the candidate
    report: CompressionReport


@torch.inference_mode()
def time_pair(a: nn.Module, b: nn.Module, inputs: Sequence[torch.Tensor], runs: int = 20, warmup: int = 3) -> tuple[float, float]:
    """Median eager latency (ms) of two models, interleaved run by run on the same inputs."""
    ta: list[float] = []
    tb: list[float] = []
    with untouched(a), untouched(b):
        for _ in range(warmup):
            a(*inputs)
            b(*inputs)
        for _ in range(runs):
            for m, out in ((a, ta), (b, tb)):
                t0 = time.perf_counter_ns()
                m(*inputs)
                out.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(ta), statistics.median(tb)


def _weight_bytes(profile: Profile) -> dict[str, int]:
    return {lid: m.weight_bytes for lid, m in profile.metrics.items()}


def compress(loaded: LoadedModel, profile: Profile, plan: CompressionPlan, samples: SampleSet, hardware: HardwareProfile,
             runs: int = 20, ort_int8: bool = False, workdir: str | Path | OutputFolder | None = None, warmup: int = 3,
             method: CaptureMethod | None = None) -> Work[CompressionOutcome]:
    """Apply ``plan`` to a copy of ``loaded``, profile the copy like ``profile`` (``runs`` timed runs
    after ``warmup``, captured with ``method``), time both interleaved, and report layer by layer."""
    resolved, warnings = resolve_plan(plan, profile)
    by_spec: dict[str, list[str]] = {}
    for r in resolved:
        by_spec.setdefault(r.describe(), []).append(r.layer_id)
    log.info("plan resolved to %d layer spec(s): %s", len(resolved), "; ".join(
        f"{d} on {len(ids)} layer(s) ({', '.join(ids[:3])}{', …' if len(ids) > 3 else ''})" for d, ids in by_spec.items()))
    for w in warnings:
        log.warning("%s", w)
    ort: OrtInt8Result | None = None
    if ort_int8:  # first, while only the original (and, with channel pruning, its pruned copy) is in memory
        yield Progress("ort int8", 0, 4, "preparing the float model")
        has_structure = any(r.params.structural for r in resolved)
        base = pruned_copy(loaded.module, profile.graph, resolved, samples.batches[0])[0] if has_structure else loaded.module
        need, avail = ORT_INT8_MEMORY_FACTOR * model_bytes(base), available_memory_bytes()
        measured: OrtInt8Result | str
        if avail and need > MEMORY_HEADROOM * avail:  # refused before it starts, with the figure, never an OOM kill mid-way
            measured = (f"ONNX Runtime int8 was not measured: it needs about {fmt_bytes(need)} of memory (the float and int8 "
                        f"ONNX models, calibration and two sessions: ~{ORT_INT8_MEMORY_FACTOR}× the weights) and "
                        f"{fmt_bytes(avail)} is available")
        else:
            with work_dir("ort-int8", keep=workdir, needed_bytes=2 * model_bytes(base)) as folder:
                try:
                    measured = yield from quantize_with_ort(base, profile.graph, resolved, samples, folder, runs=runs)
                except OnnxMappingError as exc:  # an extra measurement: its failure is reported, the compression goes on
                    measured = f"ONNX Runtime int8 was not measured: {exc}"
        del base
        if isinstance(measured, str):
            warnings.append(measured)
            log.warning("%s", measured)
        else:
            ort = measured if workdir else dataclasses.replace(measured, float_onnx="", int8_onnx="")  # scratch files are gone
    candidate, result = yield from apply_plan(loaded.module, profile.graph, resolved, samples, warnings)
    cand_loaded = LoadedModel(f"{loaded.name} (compressed)", loaded.spec, loaded.kind, candidate, loaded.inputs)
    after = yield from profile_model(cand_loaded, hardware, runs=runs, warmup=warmup, method=method)
    yield Progress("latency", 0, 1, "timing reference vs candidate, interleaved")
    before_ms, after_ms = time_pair(loaded.module, candidate, loaded.inputs, runs=runs, warmup=warmup)
    yield Progress("latency", 1, 1, "done")
    techniques: dict[str, list[str]] = {}
    for r in resolved:
        techniques.setdefault(r.layer_id, []).append(r.technique)
    wb_before, wb_after = _weight_bytes(profile), _weight_bytes(after)
    stored = result.stored_weight_bytes(wb_after)  # a layer's parameters as stored: compressed weights at their real size
    deltas = []
    for lid in profile.graph.ids():
        t_after = after.timings.get(lid)
        deltas.append(LayerDelta(
            lid, "+".join(techniques.get(lid, [])), t.latency_ms if (t := profile.timings.get(lid)) else None,
            t_after.latency_ms if t_after else None,
            profile.metrics[lid].flops, after.metrics[lid].flops if lid in after.metrics else None,
            wb_before.get(lid, 0), stored.get(lid, wb_after.get(lid, 0)),
        ))
    report = CompressionReport(profile.model.name, json.loads(plan.to_json()), tuple(resolved), result, before_ms, after_ms, runs,
                               warmup, after.model.capture_method.value, profile.total_flops, after.total_flops, tuple(deltas), ort)
    return CompressionOutcome(candidate, after, report)
