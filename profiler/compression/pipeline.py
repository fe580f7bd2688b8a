"""The whole compress job: validate the plan, apply it to a copy, profile the copy, time reference
and candidate end to end (interleaved), and optionally measure real int8 speed through ORT.

    result = drive(compress(loaded, profile, plan, samples, hardware))
    result.size_ratio, result.latency_ratio, result.output.sqnr_db, result.candidate_profile
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import OnnxMappingError
from ..files.data import SampleSet
from ..files.safeio import OutputFolder
from ..files.serde import to_jsonable
from ..files.source import LoadedModel
from ..files.workspace import work_dir
from ..format import fmt_bytes
from ..graph import CaptureMethod
from ..hardware import HardwareProfile
from ..paired import PairedTiming, time_pair
from ..pipeline import profile_model
from ..profile import Profile
from ..progress import Progress, Work
from ..resources import MEMORY_HEADROOM, available_memory_bytes
from .apply import Applied, apply_plan, model_bytes, pruned_copy
from .ort_int8 import OrtInt8Result, quantize_with_ort
from .plan import CompressionPlan, ResolvedSpec, resolve_plan

__all__ = ["LayerDelta", "CompressResult", "compress"]

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

    @property
    def latency_change_ms(self) -> float | None:
        """After - before (negative: faster), when both sides were timed."""
        if self.latency_ms_after is None or self.latency_ms_before is None:
            return None
        return self.latency_ms_after - self.latency_ms_before


# not in the JSON form: the models and profiles themselves (a profile is saved on its own), the input tensors
_NOT_JSON = ("candidate", "reference", "candidate_profile", "inputs")


@dataclass(frozen=True, kw_only=True)
class CompressResult(Applied):
    """What compressing a model with a plan gave, one level deep: what Apply did (``Applied``: sizes,
    weights, output change, warnings), the candidate and both profiles, end-to-end latency and FLOPs,
    the change per layer, ONNX Runtime's int8 measurement, and, from the compress job, the layer-by-
    layer activation comparison with its diagnostics. ``result.size_ratio``, ``result.latency_ratio``,
    ``result.output.sqnr_db``, ``result.candidate``."""

    model: str
    plan: dict  # the plan as given (JSON form)
    resolved: tuple[ResolvedSpec, ...]
    candidate: nn.Module = field(repr=False, compare=False)
    reference: Profile = field(repr=False, compare=False)  # the float model's profile
    candidate_profile: Profile = field(repr=False, compare=False)
    latency_ms_before: float  # end-to-end eager median, reference and candidate interleaved
    latency_ms_after: float
    latency: PairedTiming  # the paired runs: the ratio, its confidence interval, the verdict
    latency_runs: int
    warmup_runs: int
    capture_method: str  # how both profiles were captured (torch.fx / torch.export)
    flops_before: int
    flops_after: int
    layers: tuple[LayerDelta, ...]  # every layer of the reference, before and after
    ort: OrtInt8Result | None
    comparison: Any = None  # ActivationComparison, from the compress job
    diagnostics: tuple = ()
    inputs: tuple = field(default=(), repr=False, compare=False)  # the example inputs both models ran on
    threshold_db: float = 20.0  # the SQNR under which a layer counts as broken (the diagnostics used it too)

    @property
    def latency_ratio(self) -> float:
        """The median of the paired runs' ratios (candidate / reference)."""
        return self.latency.ratio

    def summary(self) -> dict[str, Any]:
        """Every summary line the CLI prints, as data (the history records it as the run's metrics)."""
        out = self.output
        summary = {
            "size_bytes_before": self.size_bytes_before, "size_bytes_after": self.size_bytes_after, "size_ratio": self.size_ratio,
            "latency_ms_before": self.latency_ms_before, "latency_ms_after": self.latency_ms_after, "latency_ratio": self.latency_ratio,
            "latency_ratio_interval": [self.latency.ratio_low, self.latency.ratio_high], "latency_verdict": self.latency.verdict,
            "simulated": self.simulated, "flops_before": self.flops_before, "flops_after": self.flops_after,
            "output_sqnr_db": out.sqnr_db, "output_cosine": out.cosine, "output_max_abs_error": out.max_abs_error,
            "outputs_sqnr_db": dict(out.leaves),
            "accuracy_before": out.accuracy_reference, "accuracy_after": out.accuracy_candidate, "warnings": list(self.warnings),
            "ort_int8_speedup": self.ort.speedup if self.ort is not None else None,
            "not_compressed": self.not_compressed_text(), "not_compressed_bytes": sum(w.bytes for w in self.not_compressed),
            "activations": self.comparison.summary(self.threshold_db) if self.comparison is not None else None,
        }
        return to_jsonable(summary)

    def to_json(self) -> str:
        """Every field but the models, profiles and input tensors, with ``summary()`` under ``summary``."""
        data = {f.name: to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in _NOT_JSON}
        return json.dumps({**data, "summary": self.summary()}, indent=1)


def _weight_bytes(profile: Profile) -> dict[str, int]:
    return {lid: m.weight_bytes for lid, m in profile.metrics.items()}


def _ort_int8(loaded: LoadedModel, profile: Profile, resolved: list[ResolvedSpec], samples: SampleSet, runs: int,
             workdir: str | Path | OutputFolder | None, warnings: list[str]) -> Work[OrtInt8Result | None]:
    """ONNX Runtime's real int8 of the plan, measured first, while only the original (and, with channel pruning,
    its pruned copy) is in memory; refused with the figure when memory is short. A failure is a warning: the
    compression goes on without it."""
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
        return None
    return measured if workdir else dataclasses.replace(measured, float_onnx="", int8_onnx="")  # scratch files are gone


def compress(loaded: LoadedModel, profile: Profile, plan: CompressionPlan, samples: SampleSet, hardware: HardwareProfile,
             runs: int = 20, ort_int8: bool = False, workdir: str | Path | OutputFolder | None = None, warmup: int = 3,
             method: CaptureMethod | None = None, calibration: SampleSet | None = None) -> Work[CompressResult]:
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
    ort = (yield from _ort_int8(loaded, profile, resolved, samples, runs, workdir, warnings)) if ort_int8 else None
    candidate, applied = yield from apply_plan(loaded.module, profile.graph, resolved, samples, warnings, calibration)
    cand_loaded = LoadedModel(f"{loaded.name} (compressed)", loaded.spec, loaded.kind, candidate, loaded.inputs)
    after = yield from profile_model(cand_loaded, hardware, runs=runs, warmup=warmup, method=method)
    yield Progress("latency", 0, 1, "timing reference vs candidate, interleaved")
    paired = time_pair(loaded.module, candidate, loaded.inputs, runs=runs, warmup=warmup)
    yield Progress("latency", 1, 1, "done")
    techniques: dict[str, list[str]] = {}
    for r in resolved:
        techniques.setdefault(r.layer_id, []).append(r.technique)
    wb_before, wb_after = _weight_bytes(profile), _weight_bytes(after)
    stored = applied.stored_weight_bytes(wb_after)  # a layer's parameters as stored: compressed weights at their real size
    deltas = []
    for lid in profile.graph.ids():
        t_after = after.timings.get(lid)
        deltas.append(LayerDelta(
            lid, "+".join(techniques.get(lid, [])), t.latency_ms if (t := profile.timings.get(lid)) else None,
            t_after.latency_ms if t_after else None,
            profile.metrics[lid].flops, after.metrics[lid].flops if lid in after.metrics else None,
            wb_before.get(lid, 0), stored.get(lid, wb_after.get(lid, 0)),
        ))
    return CompressResult(**{f.name: getattr(applied, f.name) for f in dataclasses.fields(applied)},
                          model=profile.model.name, plan=json.loads(plan.to_json()), resolved=tuple(resolved), candidate=candidate,
                          reference=profile, candidate_profile=after, latency_ms_before=paired.a_ms, latency_ms_after=paired.b_ms, latency=paired,
                          latency_runs=runs, warmup_runs=warmup, capture_method=after.model.capture_method.value,
                          flops_before=profile.total_flops, flops_after=after.total_flops, layers=tuple(deltas), ort=ort,
                          inputs=tuple(loaded.inputs))
