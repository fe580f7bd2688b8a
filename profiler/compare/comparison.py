"""Activation ranges, layer by layer, of a reference and a candidate model on the same inputs.

Both models are captured (same layer ids as everywhere) and run node by node in an fx
Interpreter; each layer's output is folded into streaming statistics (``stats``) and dropped, so
memory does not grow with the number of samples. ``PairStats`` (errorstats.py) compares reference
and candidate of the same tensor: SQNR, MSE, cosine, max |error|.

For merge layers (add, sub, concat) the range of each operand is kept too, and for layers whose
input the candidate fake-quantises (int8 activations) the clipping rate of that quantizer on the
data. Diagnostics live in ``diagnose``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..capture import capture
from ..compression.activations import clipped
from ..errors import ComparisonError, LayerScopeError, describe
from ..errorstats import PairStats
from ..files.data import SampleSet
from ..graph import CaptureMethod, LayerGraph
from ..progress import Progress, Work
from ..resources import release_memory, untouched
from .recorder import Recorder, input_quantizers, overwritten_nodes
from .stats import ActivationStats, TensorStats

__all__ = ["match_layers", "layer_identity",
    "OperandRange", "LayerComparison",
    "ActivationComparison", "compare_models", "shared_histograms", "COMPARE_VERSION", "MERGE_KINDS",
]

COMPARE_VERSION = 1
MERGE_KINDS = frozenset({"add", "sub", "concat"})


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class OperandRange:
    source: str  # the layer that produced this operand, or the graph input's name
    min: float
    max: float

    @property
    def absmax(self) -> float:
        return max(abs(self.min), abs(self.max))


@dataclass(frozen=True)
class LayerComparison:
    layer_id: str
    position: int  # execution order (depth axis of the error-vs-depth curve)
    op_kind: str
    type_name: str
    reference: ActivationStats
    candidate: ActivationStats | None  # None: the candidate has no such layer
    sqnr_db: float | None  # None: shapes differ (e.g. channels pruned) or no candidate layer
    mse: float | None
    cosine: float | None
    max_abs_error: float | None
    operands: tuple[OperandRange, ...] = ()  # merge layers: each input's range (reference)
    input_quantizer: tuple[float, int] | None = None  # candidate's int8 input (scale, zero point)
    input_clip_rate: float | None = None  # share of the candidate's inputs outside that quantizer's range
    input_channel_absmax: tuple[float, ...] = ()  # reference input, per channel (quantised-input layers)

    @property
    def range_ratio(self) -> float | None:
        if self.candidate is None or not self.reference.range:
            return None
        return self.candidate.range / self.reference.range


@dataclass(frozen=True)
class ActivationComparison:
    version: int
    reference: str
    candidate: str
    samples: int
    data_source: str
    layers: tuple[LayerComparison, ...]
    output_layers: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())
    # reference layers the candidate has no counterpart for (by module path, op kind and order): listed, never dropped
    unmatched: tuple[str, ...] = ()

    def layer(self, layer_id: str) -> LayerComparison:
        return next(lc for lc in self.layers if lc.layer_id == layer_id)

    def first_below(self, threshold_db: float = 20.0) -> LayerComparison | None:
        """The first layer, in execution order, whose output SQNR falls under ``threshold_db``."""
        return next((lc for lc in self.layers if lc.sqnr_db is not None and lc.sqnr_db < threshold_db), None)

    def sqnr_curve(self) -> list[tuple[int, str, float]]:
        """(position, layer id, SQNR dB) along depth, for the layers both models have with equal shapes."""
        return [(lc.position, lc.layer_id, lc.sqnr_db) for lc in self.layers if lc.sqnr_db is not None]

    def summary(self, threshold_db: float = 20.0) -> dict[str, object]:
        """The lines the CLI prints over a comparison, as data (for every --json)."""
        first = self.first_below(threshold_db)
        curve = self.sqnr_curve()
        finite = [db for _, _, db in curve if math.isfinite(db)]
        return {
            "layers_compared": len(self.layers), "layers_unmatched": list(self.unmatched), "threshold_db": threshold_db,
            "first_layer_under_threshold": None if first is None else
            {"layer_id": first.layer_id, "type": first.type_name, "sqnr_db": first.sqnr_db, "position": first.position},
            "sqnr_min_db": min(finite) if finite else None, "sqnr_max_db": max(finite) if finite else None,
            "shape_changed": [lc.layer_id for lc in self.layers if lc.sqnr_db is None and lc.candidate is not None],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- running both models
def _nonfinite(t: torch.Tensor) -> int:
    return 0 if bool(torch.isfinite(t).all()) else int((~torch.isfinite(t)).sum())


def _nonfinite_error(lid: str, bad: int, t: torch.Tensor, side: str, batch: int, graph, first: str | None) -> ComparisonError:
    where = lid if first is None else first
    origin = "" if first is None or first == lid else f"; they first appear at layer {first!r} ({graph[first].type_name})"
    return ComparisonError(f"NaN/Inf reach the {side} model's output at layer {lid!r} ({graph[lid].type_name}) "
                           f"on batch {batch}: {bad} of {t.numel()} values{origin}. Check the weights and inputs of layer {where!r} "
                           f"(an overflow in float16, a division by zero, a log of a negative?).")


def compare_models(reference: nn.Module, candidate: nn.Module, samples: SampleSet, reference_name: str = "reference",
                   candidate_name: str = "candidate", bins: int = 1024,
                   method: CaptureMethod | None = None) -> Work[ActivationComparison]:
    """Stream ``samples`` through both models and compare every layer they share (both captured with
    ``method``: fx, or export; None: fx with export as fallback)."""
    with untouched(reference), untouched(candidate):  # the traces and runs leave both models as they were
        return (yield from _compare_models(reference, candidate, samples, reference_name, candidate_name, bins, method))


@torch.inference_mode()
def _compare_models(reference: nn.Module, candidate: nn.Module, samples: SampleSet, reference_name: str,
                    candidate_name: str, bins: int, method: CaptureMethod | None) -> Work[ActivationComparison]:
    if not samples.batches:
        raise ComparisonError("No samples to compare on.")
    first = samples.batches[0]
    yield Progress("compare", 0, len(samples.batches) + 1, "capturing both models")
    try:
        ref_cap = capture(reference, first, method)
        cand_cap = capture(candidate, first, method)
    except LayerScopeError:
        raise
    except Exception as exc:  # not a capture or input error (those are LayerScopeErrors): say what failed, not a guess
        raise ComparisonError(f"Capturing the models for the comparison failed: {describe(exc)}") from exc
    graph = ref_cap.graph
    to_cand = match_layers(graph, cand_cap.graph)
    common = [lid for lid in graph.ids() if lid in to_cand]
    if not common:
        raise ComparisonError(f"{reference_name} and {candidate_name} share no layers (by module path, op kind and order); "
                              f"compare models built from the same code.")
    by_path = input_quantizers(candidate)
    quantizers = {lid: by_path[path] for lid in common if (path := graph[lid].module_path) is not None and path in by_path}
    acc = _Accumulator(common, graph, cand_cap.graph, quantizers, bins, (reference_name, candidate_name), to_cand)
    order: list[str] = []
    ref_over, cand_over = (overwritten_nodes(c.runnable(), c.runnable().graph) for c in (ref_cap, cand_cap))
    for k, batch in enumerate(samples.batches):
        acc.batch = k
        ref = Recorder(ref_cap, acc.merge | set(quantizers), acc.ref_output, acc.ref_inputs, ref_over)
        cand = Recorder(cand_cap, {to_cand[lid] for lid in quantizers}, acc.cand_output, acc.cand_inputs, cand_over)
        for side in (ref, cand):
            try:
                side.run(*batch)
            except LayerScopeError:  # ComparisonError, Cancelled
                raise
            except Exception as exc:
                raise ComparisonError(f"Batch {k} does not fit the model ({describe(exc)}).") from exc
        acc.end_batch()
        order = ref.order
        yield Progress("compare", k + 1, len(samples.batches) + 1, f"batch {k + 1}/{len(samples.batches)}")
    layers = acc.layers({lid: i for i, lid in enumerate(order)})
    yield Progress("compare", len(samples.batches) + 1, len(samples.batches) + 1, "done")
    seen_in: dict[str, list[str]] = {}
    for (model_name, lid), what in acc.nonfinite.items():
        entry = model_name if lid in seen_in else f"{model_name}: {what}"  # the count once, from the first model
        seen_in.setdefault(lid, []).append(entry)
    notes = [f"NaN/Inf at layer {lid!r} ({graph[lid].type_name if lid in graph else lid}) in {' and '.join(s)}; they do not "
             f"reach the output (discarded later, e.g. by torch.where), and the statistics skip them" for lid, s in seen_in.items()]
    if ref_cap.method != cand_cap.method:
        notes.append(f"captured with {ref_cap.method.value} and {cand_cap.method.value}")
    unmatched = tuple(lid for lid in graph.ids() if lid not in to_cand)
    if unmatched:
        notes.append(f"{len(unmatched)} layer(s) of {reference_name} have no counterpart in {candidate_name} (by module path, op "
                     f"kind and order) and are not compared: {', '.join(unmatched[:5])}{' …' if len(unmatched) > 5 else ''}")
    return ActivationComparison(COMPARE_VERSION, reference_name, candidate_name, samples.n_samples, samples.source,
                                tuple(layers), tuple(graph.output_layers), tuple(notes), unmatched)


def layer_identity(graph: LayerGraph) -> dict[str, tuple[str, ...]]:
    """Per layer, what it is whatever the capture's node counters say (an inserted quantizer shifts ``add_7`` to
    ``add_19``): a module call by its path and call order; a functional op by its parent module, kind and order
    within that module."""
    seen: dict[tuple[str, ...], int] = {}
    out: dict[str, tuple[str, ...]] = {}
    for lid in graph.ids():
        layer = graph[lid]
        key = ("module", layer.module_path) if layer.module_path is not None else \
            ("op", layer.parents[-1] if layer.parents else "", layer.op_kind)
        n = seen.get(key, 0)
        seen[key] = n + 1
        out[lid] = (*key, str(n))
    return out


def match_layers(reference: LayerGraph, candidate: LayerGraph) -> dict[str, str]:
    """Reference layer id -> the candidate's layer id of the same identity (``layer_identity``)."""
    by_identity = {key: lid for lid, key in layer_identity(candidate).items()}
    return {lid: by_identity[key] for lid, key in layer_identity(reference).items() if key in by_identity}


class _Accumulator:
    """Streaming statistics of both models, fed by the two recorders batch by batch.

    Memory: the reference's layer outputs of one batch are ``held`` until the candidate produces the
    same layer; each candidate output is folded into the statistics and dropped at once, and so are
    the inputs the statistics need. Peak: one model's activations of one batch."""

    def __init__(self, common: list[str], graph: LayerGraph, cand_graph: LayerGraph,
                 quantizers: dict[str, tuple[float, int]], bins: int, names: tuple[str, str], to_cand: dict[str, str]) -> None:
        self.graph, self.cand_graph, self.quantizers, self.names = graph, cand_graph, quantizers, names
        self.to_ref = {c: r for r, c in to_cand.items()}  # the candidate's layer id -> the reference's
        self.common = common
        self.merge = {lid for lid in common if graph[lid].op_kind in MERGE_KINDS}
        self.ref_stats = {lid: TensorStats(bins) for lid in common}
        self.cand_stats = {lid: TensorStats(bins) for lid in common}
        self.pairs = {lid: PairStats() for lid in common}
        self.operand_stats: dict[str, list[tuple[str, TensorStats]]] = {}
        self.in_ch: dict[str, torch.Tensor] = {}  # per-channel absmax of a quantised layer's input
        self.clip = {lid: [0, 0] for lid in quantizers}  # clipped, seen
        self.held: dict[str, torch.Tensor] = {}
        self.folded = 0  # layers compared so far: the heap is trimmed every 32 (see release_memory)
        self.batch = 0
        self.nonfinite: dict[tuple[str, str], str] = {}  # (model, layer) -> the first NaN/Inf seen in an intermediate

    def ref_inputs(self, lid: str, ops: list[tuple[str, torch.Tensor]]) -> None:
        if lid in self.merge:
            slots = self.operand_stats.setdefault(lid, [(src, TensorStats(64)) for src, _ in ops])
            for (_, st), (_, t) in zip(slots, ops, strict=False):
                st.add(t)
        if lid in self.quantizers and ops:
            t = ops[0][1]
            ax = TensorStats.channel_axis(t)
            if ax is not None:
                m = t.detach().abs().movedim(ax, 0).reshape(t.shape[ax], -1).amax(1).double()
                old = self.in_ch.get(lid)
                self.in_ch[lid] = m if old is None or old.shape != m.shape else torch.maximum(old, m)

    def cand_inputs(self, cand_lid: str, ops: list[tuple[str, torch.Tensor]]) -> None:
        lid = self.to_ref.get(cand_lid)
        if lid in self.quantizers and ops:
            scale, zp = self.quantizers[lid]
            x = ops[0][1].double()
            self.clip[lid][0] += int(clipped(x, scale, zp).sum())
            self.clip[lid][1] += x.numel()

    def _finite(self, lid: str, t: torch.Tensor, side: int, graph: LayerGraph) -> None:
        """Only NaN/Inf at the model's output stop the comparison. An intermediate one that is discarded later (T5's
        relative-position bucketing takes log(0) = -inf and drops it with torch.where) becomes a note; the statistics
        skip the non-finite values."""
        bad = _nonfinite(t)
        if not bad:
            return
        if lid in graph.output_layers:
            first = next((layer for (name, layer) in self.nonfinite if name == self.names[side]), None)
            raise _nonfinite_error(lid, bad, t, self.names[side], self.batch, graph, first)
        key = (self.names[side], lid)
        if key not in self.nonfinite:
            self.nonfinite[key] = f"{bad} of {t.numel()} values on batch {self.batch}"

    def ref_output(self, lid: str, t: torch.Tensor) -> None:
        self._finite(lid, t, 0, self.graph)
        if lid in self.ref_stats:
            self.held[lid] = t

    def cand_output(self, cand_lid: str, c: torch.Tensor) -> None:
        self._finite(cand_lid, c, 1, self.cand_graph)
        lid = self.to_ref.get(cand_lid)
        r = self.held.pop(lid, None) if lid is not None else None
        if r is None or lid is None:
            return
        self.folded += 1
        if self.folded % 32 == 0:
            release_memory()
        self.ref_stats[lid].add(r)
        self.cand_stats[lid].add(c)
        if c.shape == r.shape:
            if (self.names[0], lid) in self.nonfinite or (self.names[1], lid) in self.nonfinite:
                ok = torch.isfinite(r) & torch.isfinite(c)  # compare where both are numbers
                r, c = r[ok], c[ok]
            self.pairs[lid].add(r, c)
        else:
            self.pairs[lid].n = -1  # shapes differ: no elementwise comparison

    def end_batch(self) -> None:
        for lid, r in self.held.items():  # layers the candidate did not produce
            self.ref_stats[lid].add(r)
        self.held.clear()
        release_memory()

    def layers(self, position: dict[str, int]) -> list[LayerComparison]:
        out = []
        for lid in sorted((lid for lid in self.common if self.ref_stats[lid].count), key=lambda i: position.get(i, 1 << 30)):
            p, clip = self.pairs[lid], self.clip.get(lid)
            same = p.n > 0
            out.append(LayerComparison(
                lid, position.get(lid, -1), self.graph[lid].op_kind, self.graph[lid].type_name, self.ref_stats[lid].freeze(),
                self.cand_stats[lid].freeze() if self.cand_stats[lid].count > 0 else None,
                p.sqnr_db if same else None, p.mse if same else None, p.cosine if same else None, p.max_abs if same else None,
                tuple(OperandRange(src, st.min, st.max) for src, st in self.operand_stats.get(lid, []) if st.count),
                self.quantizers.get(lid), clip[0] / clip[1] if clip and clip[1] else None,
                tuple(self.in_ch[lid].tolist()) if lid in self.in_ch else (),
            ))
        return out


def shared_histograms(a: ActivationStats, b: ActivationStats | None, bins: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both histograms on one set of edges spanning both ranges (for an overlay plot)."""
    lo = min(a.min, b.min) if b is not None else a.min
    hi = max(a.max, b.max) if b is not None else a.max
    if not hi > lo:
        hi = lo + 1e-6
    edges = np.linspace(lo, hi, bins + 1)
    ca = a.histogram().rebinned(edges)
    cb = b.histogram().rebinned(edges) if b is not None else np.zeros(bins)
    return edges, ca, cb
