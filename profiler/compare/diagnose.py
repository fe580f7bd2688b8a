"""Quantisation range diagnostics over an ActivationComparison, ranked, each with its evidence and a
suggested fix. The checks follow what practitioners asked for (paper 5.6.2–5.6.4, Strategy #6):

* range-mismatch: an add/sub/concat whose inputs' ranges differ by more than ``range_factor``.
  "You tend to lose resolution in the output where one branch dominates the range" (E6).
* quantized-output: the plan quantises or palettizes an output layer ("if the output is fine
  grain, don't quantize").
* outlier-channels: per-tensor quantisation of a weight (or an int8 input) whose channel ranges
  contain an outlier: one channel sets the scale for all.
* clipping: an int8 input quantizer clips more than ``clip_rate`` of the values it sees.
* compounding-error: SQNR falls steadily with depth after the first compressed layer.
* dead-channels: channels the candidate always outputs as zero where the reference did not
  (what unstructured pruning leaves behind).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from torch import nn

from ..compression.activations import quant_range
from ..compression.specs import Granularity, QuantizeParams
from ..format import fmt_db
from ..graph import LayerGraph
from .comparison import ActivationComparison, LayerComparison

__all__ = ["DiagnosticKind", "Diagnostic", "diagnose"]

_WEIGHTED = frozenset({"conv", "conv_transpose", "linear", "embedding"})


class DiagnosticKind(StrEnum):
    RANGE_MISMATCH = "range-mismatch"
    QUANTIZED_OUTPUT = "quantized-output"
    OUTLIER_CHANNELS = "outlier-channels"
    CLIPPING = "clipping"
    COMPOUNDING = "compounding-error"
    DEAD_CHANNELS = "dead-channels"


@dataclass(frozen=True)
class Diagnostic:
    kind: DiagnosticKind
    score: float  # for ranking: higher is worse
    layer_ids: tuple[str, ...]  # the culprit first
    message: str
    evidence: str
    fix: str


def _outlier(values: Sequence[float]) -> tuple[int, float] | None:
    vals = [abs(v) for v in values]
    if len(vals) < 4:
        return None
    med = statistics.median(vals)
    k = max(range(len(vals)), key=vals.__getitem__)
    return (k, vals[k] / med) if med > 0 else None


def diagnose(cmp: ActivationComparison, graph: LayerGraph, resolved: Sequence = (), reference: nn.Module | None = None, *,
             range_factor: float = 10.0, outlier_factor: float = 8.0, clip_rate: float = 1e-3,
             sqnr_threshold_db: float = 20.0, compounding_drop_db: float = 6.0) -> list[Diagnostic]:
    """All diagnostics, worst first. ``resolved``: the plan's ResolvedSpecs (for plan-aware checks)."""
    weight_specs = {r.layer_id: r for r in resolved if r.technique != "prune_channels"}
    by_id = {lc.layer_id: lc for lc in cmp.layers}
    out = [
        *_range_mismatches(cmp, range_factor),
        *_quantized_outputs(cmp, weight_specs, by_id),
        *_weight_outliers(weight_specs, by_id, graph, reference, outlier_factor),
        *_input_quantizers(cmp, outlier_factor, clip_rate),
        *_dead_channels(cmp),
        *_compounding(cmp, weight_specs, sqnr_threshold_db, compounding_drop_db),
    ]
    return sorted(out, key=lambda d: -d.score)


MIN_MAGNITUDE = 1e-6  # ranges below this are numerically zero (a random-weight model's constant output): no diagnosis
FLOAT32_EPS = 2.0 ** -23


def _range_mismatches(cmp: ActivationComparison, range_factor: float) -> Iterator[Diagnostic]:
    """Merges (add/sub/concat) whose inputs' ranges differ by more than ``range_factor``."""
    for lc in cmp.layers:
        ops = [o for o in lc.operands if o.absmax > 0]
        if len(ops) < 2:
            continue
        big, small = max(ops, key=lambda o: o.absmax), min(ops, key=lambda o: o.absmax)
        ratio = big.absmax / small.absmax
        if ratio <= range_factor or big.absmax < MIN_MAGNITUDE or ratio > 1 / FLOAT32_EPS:
            continue  # both numerically zero, or a branch below float32's own resolution: nothing quantisation could lose
        levels = 256 / ratio
        yield Diagnostic(
            DiagnosticKind.RANGE_MISMATCH, math.log10(ratio), (lc.layer_id, big.source, small.source),
            f"{lc.type_name} {lc.layer_id!r}: input {big.source!r} spans {ratio:.0f}× the range of input {small.source!r}",
            f"{big.source}: [{big.min:.3g}, {big.max:.3g}]; {small.source}: [{small.min:.3g}, {small.max:.3g}]. With one int8 "
            f"scale for the {lc.op_kind} output, {small.source!r} is left about {levels:.1f} of 256 levels"
            + (f"; this layer's output SQNR is {fmt_db(lc.sqnr_db)}" if lc.sqnr_db is not None else ""),
            f"Rescale the dominant branch (fold its scale into the layer before it, or add a norm), keep {lc.layer_id!r} "
            f"and its inputs in float16/int16, or quantise each branch with its own scale before the {lc.op_kind}.",
        )


def _quantized_outputs(cmp: ActivationComparison, weight_specs: dict, by_id: dict[str, LayerComparison]) -> Iterator[Diagnostic]:
    """The plan quantises or palettizes one of the model's output layers."""
    for lid, r in weight_specs.items():
        if lid not in cmp.output_layers or r.technique not in ("quantize", "palettize"):
            continue
        lc = by_id.get(lid)
        sq = lc.sqnr_db if lc else None
        yield Diagnostic(
            DiagnosticKind.QUANTIZED_OUTPUT, 3.0 if sq is not None and sq < 30 else 1.5, (lid,),
            f"The output layer {lid!r} is {r.technique}d ({r.params.describe()})",
            f"model output SQNR {fmt_db(sq)}" + (f", max |error| {lc.max_abs_error:.3g} on outputs in [{lc.reference.min:.3g}, "
                                              f"{lc.reference.max:.3g}]" if lc and lc.max_abs_error is not None else ""),
            "If this head is a regression or any fine-grained continuous output, keep it in float (or float16): "
            "'if the output is fine grain, don't quantize' (paper 5.6.4). A classifier's argmax usually tolerates it.",
        )


def _weight_outliers(weight_specs: dict, by_id: dict[str, LayerComparison], graph: LayerGraph, reference: nn.Module | None,
                     outlier_factor: float) -> Iterator[Diagnostic]:
    """Per-tensor weight quantisation of a weight with an outlier output channel."""
    if reference is None:
        return
    for lid, r in weight_specs.items():
        q = r.params
        if not isinstance(q, QuantizeParams) or q.granularity is not Granularity.PER_TENSOR:
            continue
        path = graph[lid].module_path if lid in graph else None
        w = getattr(reference.get_submodule(path), "weight", None) if path else None
        if w is None:
            continue
        hit = _outlier(w.detach().abs().reshape(w.shape[0], -1).amax(1).tolist())
        if not hit or hit[1] <= outlier_factor:
            continue
        k, ratio = hit
        lc = by_id.get(lid)
        yield Diagnostic(
            DiagnosticKind.OUTLIER_CHANNELS, math.log10(ratio) + 0.5, (lid,),
            f"{lid!r}: weight channel {k} is {ratio:.0f}× the median channel range, under one per-tensor scale",
            f"per-tensor int{q.bits} gives every channel the step of channel {k}: the median channel keeps "
            f"about {2 ** q.bits / ratio:.0f} of {2 ** q.bits} levels; output SQNR {fmt_db(lc.sqnr_db if lc else None)}",
            "Quantise this layer per channel (granularity: per_channel): each output channel gets its own scale.",
        )


def _input_quantizers(cmp: ActivationComparison, outlier_factor: float, clip_rate: float) -> Iterator[Diagnostic]:
    """int8 input quantizers: an outlier input channel under one scale, and clipping."""
    for lc in cmp.layers:
        if lc.input_quantizer is None:
            continue
        hit = _outlier(lc.input_channel_absmax)
        if hit and hit[1] > outlier_factor:
            k, ratio = hit
            yield Diagnostic(
                DiagnosticKind.OUTLIER_CHANNELS, math.log10(ratio), (lc.layer_id,),
                f"{lc.layer_id!r}: input channel {k} reaches {ratio:.0f}× the median channel, under a per-tensor int8 activation scale",
                f"input channel absmax: max {max(lc.input_channel_absmax):.3g}, median {statistics.median(lc.input_channel_absmax):.3g}",
                "Keep this layer's input in float16/int16, or move the outlier's scale into the weights (per-channel "
                "smoothing) before quantising the activation per tensor.",
            )
        if lc.input_clip_rate is not None and lc.input_clip_rate > clip_rate:
            lo, hi = quant_range(*lc.input_quantizer)
            yield Diagnostic(
                DiagnosticKind.CLIPPING, lc.input_clip_rate * 100, (lc.layer_id,),
                f"{lc.layer_id!r}: {lc.input_clip_rate:.2%} of its int8 input values are clipped",
                f"calibrated range [{lo:.3g}, {hi:.3g}]; output SQNR {fmt_db(lc.sqnr_db)}",
                "Calibrate on data like these; choose the calibration deliberately: percentile or MSE trade a little clipping "
                "for resolution, min/max clips nothing it has seen.",
            )


def _dead_channels(cmp: ActivationComparison) -> Iterator[Diagnostic]:
    """Channels the candidate always outputs as zero where the reference did not (at the layers with
    weights, not every ReLU after them)."""
    for lc in cmp.layers:
        if lc.candidate is None or lc.sqnr_db is None or not lc.candidate.channel_max or lc.op_kind not in _WEIGHTED:
            continue
        dead = [c for c, (lo, hi, rlo, rhi) in enumerate(zip(lc.candidate.channel_min, lc.candidate.channel_max,
                                                               lc.reference.channel_min, lc.reference.channel_max, strict=False))
                if lo == 0 == hi and not rlo == 0 == rhi]
        if not dead:
            continue
        frac = len(dead) / len(lc.candidate.channel_max)
        yield Diagnostic(
            DiagnosticKind.DEAD_CHANNELS, 3 * frac, (lc.layer_id,),
            f"{lc.layer_id!r}: {len(dead)} of {len(lc.candidate.channel_max)} output channels are always zero in the candidate",
            f"channels {', '.join(map(str, dead[:8]))}{' …' if len(dead) > 8 else ''} were non-zero in the reference",
            "These channels still cost FLOPs: remove them with prune_channels (structured), or lower the sparsity.",
        )


def _compounding(cmp: ActivationComparison, weight_specs: dict, sqnr_threshold_db: float,
                 compounding_drop_db: float) -> Iterator[Diagnostic]:
    """SQNR falling steadily with depth from the first compressed layer to the output."""
    curve = cmp.sqnr_curve()
    compressed = [i for i, (_, lid, _) in enumerate(curve) if lid in weight_specs]
    outputs = [i for i, (_, lid, _) in enumerate(curve) if lid in cmp.output_layers]
    if not (compressed and outputs and math.isfinite(curve[compressed[0]][2])):
        return
    start, end = curve[compressed[0]], curve[outputs[-1]]
    drop = start[2] - end[2]
    if drop <= compounding_drop_db:
        return
    steps = [(curve[i - 1][2] - curve[i][2], curve[i][1]) for i in range(compressed[0] + 1, outputs[-1] + 1)
             if math.isfinite(curve[i - 1][2])]
    worst = sorted(steps, reverse=True)[:3]
    first = cmp.first_below(sqnr_threshold_db)
    yield Diagnostic(
        DiagnosticKind.COMPOUNDING, drop / 10, tuple(lid for _, lid in worst) or (end[1],),
        f"Error compounds with depth: SQNR falls {drop:.1f} dB from {start[1]!r} ({fmt_db(start[2])}) to the output "
        f"{end[1]!r} ({fmt_db(end[2])})",
        "largest single-layer drops: " + ", ".join(f"{lid} (−{d:.1f} dB)" for d, lid in worst)
        + (f"; first layer under {sqnr_threshold_db:.0f} dB: {first.layer_id!r}" if first else ""),
        "Keep the layers with the largest drops (or the first under the threshold) in higher precision, or use "
        "per-channel / finer groups there; then re-check where the curve bends.",
    )
