"""What a profile read from a file must hold before any view sees it: every overlay keyed by a layer of
the graph, finite non-negative measurements, latency shares that add up, an acyclic graph."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import networkx as nx

if TYPE_CHECKING:
    from .profile import Profile

__all__ = ["inconsistency"]


def _bad_number(v: float | int | None, optional: bool = False, allow_inf: bool = False) -> bool:
    if v is None:
        return not optional
    return math.isnan(v) or v < 0 or (math.isinf(v) and not allow_inf)


def inconsistency(p: Profile) -> str:
    """The first fact a loaded profile breaks, or ''."""
    g = p.graph
    ids = set(g.ids())
    if not ids:
        return "it has no layers"
    for name, overlay in (("metrics", p.metrics), ("roofline", p.roofline)):
        missing, extra = ids - set(overlay), set(overlay) - ids
        if missing or extra:
            bad = sorted(missing)[:1] or sorted(extra)[:1]
            return f"'{name}' {'lacks layer' if missing else 'names unknown layer'} {bad[0]!r}"
    extra = set(p.timings) - ids
    if extra:
        return f"'timings' names unknown layer {sorted(extra)[0]!r}"
    for a, b in g.edges:
        if a not in ids or b not in ids:
            return f"edge {a!r} -> {b!r} names a layer that is not in the graph"
    for name, group in (("input_layers", g.input_layers), ("output_layers", g.output_layers)):
        unknown = [i for i in group if i not in ids]
        if unknown:
            return f"'graph.{name}' names unknown layer {unknown[0]!r}"
    if not nx.is_directed_acyclic_graph(g.nx):
        return "the layer graph has a cycle"
    for layer in g:
        for t in (*layer.operands, *layer.outputs):
            if any(d < 0 for d in t.shape):
                return f"layer {layer.id!r} has a negative tensor dimension {t.shape}"
    for lid, m in p.metrics.items():
        if any(_bad_number(v) for v in (m.params, m.weight_bytes, m.bytes_read, m.bytes_written)) or \
                any(_bad_number(v, optional=True) for v in (m.flops, m.macs)):
            return f"metrics of layer {lid!r} hold a negative or missing count"
    for lid, lt in p.timings.items():
        if any(_bad_number(v) for v in (lt.latency_ms, lt.p25_ms, lt.p75_ms, lt.min_ms, lt.output_bytes, lt.live_bytes_after)):
            return f"timing of layer {lid!r} is negative, NaN or infinite"
    for lid, pt in p.roofline.items():
        if any(_bad_number(v, optional=True, allow_inf=True) for v in
               (pt.intensity, pt.attained_gflops, pt.attained_gbs, pt.roof_gflops, pt.roof_fraction)):
            return f"roofline point of layer {lid!r} is negative or NaN"
    s = p.summary
    if any(_bad_number(v) for v in (s.end_to_end_ms, s.end_to_end_p25_ms, s.end_to_end_p75_ms, s.sum_of_layer_medians_ms,
                                    s.glue_ms, s.weight_bytes, s.peak_activation_bytes, s.peak_memory_bytes)):
        return "the timing summary holds a negative, NaN or infinite number"
    if s.runs < (0 if not p.timings else 1) or s.warmup < 0 or s.threads < 1:
        return "the timing summary's runs/warmup/threads are out of range"
    total = sum(t.latency_ms for t in p.timings.values())
    if not math.isclose(total, s.sum_of_layer_medians_ms, rel_tol=1e-3, abs_tol=1e-6):
        return (f"per-layer latencies add up to {total:.4g} ms but the summary says {s.sum_of_layer_medians_ms:.4g} ms, "
                f"so the latency shares would not sum to 100 %")
    info = p.model
    if info.total_params < 0 or info.total_weight_bytes < 0 or len(info.input_shapes) != len(info.input_dtypes):
        return "the model section is inconsistent (negative totals or input shapes without dtypes)"
    return ""
