"""``layerscope report PROFILE.json [--compare OTHER.json] [--onnx ONNX.json] [--compress COMPRESS.json] -o report.html``:
a profile as one self-contained HTML page to send to the people who decide. It holds the headline, a log-log
roofline with one dot per layer (hover for the layer), the ranked layer table (click a header to sort), time and
FLOPs by op type and by top-level module; with ``--compare`` the two profiles layer by layer; with ``--onnx``
(``layerscope onnx --json``) the compiled ONNX Runtime ops and how much of their time maps to source layers; with
``--compress`` (``layerscope compress --json``) size, latency and quality before/after, each layer's change and
output SQNR along depth, and the diagnostics."""

from __future__ import annotations

import html
import math
from typing import Any

from ..errors import LayerScopeError
from ..format import fmt_bytes, fmt_count, fmt_db, fmt_ms, fmt_pct
from ..profile import LayerRow, Profile
from ..runtimes.onnx.results import OnnxProfile
from .html import Axes, cell, log_ticks, page, ticks

__all__ = ["profile_html", "check_compress_report"]


def _roofline_svg(p: Profile) -> tuple[str, int]:
    """The roofline and one dot per layer that has an intensity and an attained speed; (svg, dots)."""
    hw, dtype = p.hardware, p.model.compute_dtype
    peak, _ = hw.peak_for(dtype)
    pts = [(r, r.point.intensity, r.point.attained_gflops) for r in p.rows()
           if r.point is not None and r.point.intensity and r.point.attained_gflops]
    xs = [x for _, x, _ in pts] + [hw.ridge_point(dtype)]
    ys = [y for _, _, y in pts] + [peak]
    ax = Axes(min(xs) / 2, max(xs) * 2, min(ys) / 2, peak * 2, log_x=True, log_y=True)
    out = ax.start()
    out.append(ax.grid_x(log_ticks(ax.x0, ax.x1)) + ax.grid_y(log_ticks(ax.y0, ax.y1)))
    roof = [(x, min(peak, x * hw.bandwidth_gbs)) for x in (ax.x0, hw.ridge_point(dtype), ax.x1)]
    out.append('<polyline class="roof" points="' + " ".join(f"{ax.sx(x):.1f},{ax.sy(y):.1f}" for x, y in roof) + '"/>')
    colour = {"memory-bound": "#4c78a8", "compute-bound": "#e45756"}
    for r, x, y in pts:
        tip = (f"{r.layer.id} ({r.layer.type_name})\n{x:.3g} FLOP/byte, {y:.3g} GFLOP/s"
               + (f", {r.point.roof_text()} of roof" if r.point and r.point.roof_fraction is not None else "")
               + (f"\n{r.timing.latency_ms:.4g} ms" if r.timing else ""))
        out.append(f'<circle cx="{ax.sx(x):.1f}" cy="{ax.sy(y):.1f}" r="4.5" class="layer" fill="{colour.get(r.bound.value, "#999")}" '
                   f'data-layer="{html.escape(r.layer.id)}"><title>{html.escape(tip)}</title></circle>')
    out.append(ax.labels("arithmetic intensity (FLOP/byte)", "attained GFLOP/s (measured)" if not p.static else "GFLOP/s") + "</svg>")
    return "".join(out), len(pts)


def _layer_rows(rows: list[LayerRow]) -> str:
    out = []
    for i, r in enumerate(rows, 1):
        t, m, pt = r.timing, r.metrics, r.point
        ai = m.arithmetic_intensity
        out.append(f"<tr><td data-v='{i}'>{i}</td><td>{html.escape(r.layer.id)}</td><td>{html.escape(r.layer.type_name)}</td>"
                   + cell(t.latency_ms if t else None, fmt_ms(t.latency_ms) if t else "")
                   + cell(t.spread_ms if t else None, fmt_ms(t.spread_ms) if t else "")
                   + cell(r.latency_share, f"{r.latency_share:.1%}")
                   + cell(m.flops, fmt_count(m.flops)) + cell(m.bytes_moved, fmt_bytes(m.bytes_moved))
                   + cell(ai, f"{ai:.1f}" if ai is not None else "") + f"<td>{r.bound.value}</td>"
                   + cell(pt.roof_fraction if pt else None, pt.roof_text() if pt else "")
                   + f"<td>{html.escape(str(r.layer.source or ''))}</td></tr>")
    return "".join(out)


def _totals(p: Profile, key: str) -> str:
    groups = p.totals_by(key, 1)
    top = max((g.share(p.static) for g in groups), default=0.0) or 1.0
    rows = "".join(f"<tr><td>{html.escape(g.path)}</td>{cell(g.layers, str(g.layers))}"
                   f"{cell(g.latency_ms, fmt_ms(g.latency_ms))}{cell(g.share(p.static), f'{g.share(p.static):.1%}')}"
                   f"<td><span class='bar' style='width:{160 * g.share(p.static) / top:.0f}px'></span></td>"
                   f"{cell(g.flops, fmt_count(g.flops))}{cell(g.params, f'{g.params:,}')}</tr>" for g in groups)
    head = "op type" if key == "type" else "module"
    share = "share of FLOPs" if p.static else "share of time"
    return (f"<table class='sortable'><thead><tr><th>{head}</th><th>layers</th><th>ms</th><th>{share}</th><th></th><th>FLOPs</th>"
            f"<th>params</th></tr></thead><tbody>{rows}</tbody></table>")


def _compare(a: Profile, b: Profile, name_a: str, name_b: str) -> str:
    common = [lid for lid in a.graph.ids() if lid in b.timings and lid in a.timings]
    diffs = sorted(common, key=lambda lid: -abs(b.timings[lid].latency_ms - a.timings[lid].latency_ms))
    rows = []
    for lid in diffs:
        ta, tb = a.timings[lid].latency_ms, b.timings[lid].latency_ms
        ch = (tb - ta) / ta if ta > 0 else math.nan
        within = abs(tb - ta) <= max(a.timings[lid].spread_ms, b.timings[lid].spread_ms)
        rows.append(f"<tr><td>{html.escape(lid)}</td>{cell(ta, fmt_ms(ta))}{cell(tb, fmt_ms(tb))}"
                    f"{cell(ch, f'{ch:+.0%}')}<td>{'within noise' if within else ''}</td></tr>")
    only_a = [lid for lid in a.graph.ids() if lid not in b.graph]
    only_b = [lid for lid in b.graph.ids() if lid not in a.graph]
    ea, eb = a.summary.end_to_end_ms, b.summary.end_to_end_ms
    return (f"<h2>Compared with {html.escape(name_b)}</h2><p>End to end {fmt_ms(ea)} → {fmt_ms(eb)} ms"
            f"{f' ({(eb - ea) / ea:+.0%})' if ea else ''}; {len(common)} layers in both, {len(only_a)} only in this profile, "
            f"{len(only_b)} only in {html.escape(name_b)}. A change smaller than either run's spread is marked.</p>"
            f"<table class='sortable'><thead><tr><th>layer</th><th>{html.escape(name_a)} ms</th><th>{html.escape(name_b)} ms</th>"
            f"<th>change</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _compiled(op: OnnxProfile, top: int = 40) -> str:
    """ONNX Runtime's compiled ops ranked by kernel time, each with the source layers it maps to."""
    e = html.escape
    total = op.total_op_ms or 1.0
    target = "source layers" if op.has_source else "ONNX nodes (a plain .onnx file: no PyTorch source)"
    rows = []
    for i, o in enumerate(op.ranked()[:top], 1):
        layers = ", ".join(o.layer_ids) if o.layer_ids else ", ".join(o.onnx_nodes[:3]) + (" …" if len(o.onnx_nodes) > 3 else "")
        rows.append(f"<tr>{cell(i, str(i))}<td>{e(o.name)}</td><td>{e(o.op_type)}</td>{cell(o.latency_ms, fmt_ms(o.latency_ms))}"
                    f"{cell(o.latency_ms / total, fmt_pct(o.latency_ms / total))}{cell(len(o.onnx_nodes), str(len(o.onnx_nodes)))}"
                    f"<td>{e(layers) or '-'}</td><td>{e(o.how.value)}</td><td>{e('; '.join(o.source_lines[:2]))}</td></tr>")
    unmapped = (f"<div class='note'>Unmapped ops: {e(', '.join(op.unmapped))}</div>" if op.unmapped else "")
    return (f"<h2>Compiled ops (ONNX Runtime)</h2><p>{e(op.model_name)}: {e(op.exporter.value)} → ONNX Runtime {e(op.ort_version)}, "
            f"opt level <b>{e(op.opt_level.value)}</b>, {e(op.provider)}; <b>{fmt_ms(op.end_to_end_ms)} ms</b> end to end (median of "
            f"{op.runs} runs), sum of op medians {fmt_ms(op.total_op_ms)} ms.</p>"
            f"<p class='coverage'>Coverage: <b>{fmt_pct(op.coverage_ops)}</b> of {len(op.ops)} compiled ops and "
            f"<b>{fmt_pct(op.coverage_time)}</b> of op time map to {target}.</p>{unmapped}"
            + "".join(f"<div class='note'>{e(n)}</div>" for n in op.notes)
            + f"<table class='sortable' id='compiled'><thead><tr><th>#</th><th>ORT op</th><th>op type</th><th>ms</th><th>share</th>"
            f"<th>ONNX nodes</th><th>source layers</th><th>match</th><th>source line</th></tr></thead><tbody>{''.join(rows)}</tbody>"
            f"</table>" + (f"<p class='muted'>The {top} slowest of {len(op.ops)} ops.</p>" if len(op.ops) > top else ""))


_COMPRESS_KEYS = ("summary", "layers", "comparison", "diagnostics")


def check_compress_report(data: Any, origin: str) -> dict[str, Any]:
    """``data`` when it is a ``layerscope compress --json`` report, else an error naming ``origin``."""
    if not isinstance(data, dict) or any(k not in data for k in _COMPRESS_KEYS):
        raise LayerScopeError(f"{origin} is not a `layerscope compress --json` report (it needs {', '.join(_COMPRESS_KEYS)}).")
    return data


def _db(v: Any) -> float | None:
    """An SQNR as the JSON holds it: a number, "inf" (identical: upstream of every change), or null."""
    return float(v) if isinstance(v, int | float) or v in ("inf", "-inf") else None


def _sqnr_svg(layers: list[dict[str, Any]], threshold_db: float) -> tuple[str, int]:
    """Each compared layer's output SQNR along depth, with the threshold; (svg, dots). Identical layers
    (infinite SQNR: before the first change) have no dot."""
    pts = [(c["position"], v, c["layer_id"]) for c in layers if (v := _db(c.get("sqnr_db"))) is not None and math.isfinite(v)]
    if not pts:
        return "<p class='muted'>No layer's output changed measurably (or shapes changed everywhere).</p>", 0
    x0 = min(p[0] for p in pts)
    ys = [p[1] for p in pts] + [threshold_db]
    ax = Axes(x0, max(max(p[0] for p in pts), x0 + 1), min(ys) - 5, max(ys) + 5, H=260, L=56, T=14, B=40)
    out = ax.start("sqnr")
    out.append(ax.grid_y(ticks(ax.y0, ax.y1)))
    out.append(f'<line x1="{ax.L}" x2="{ax.W - ax.R}" y1="{ax.sy(threshold_db):.1f}" y2="{ax.sy(threshold_db):.1f}" class="budget"/>'
               f'<text x="{ax.W - ax.R - 4}" y="{ax.sy(threshold_db) - 4:.1f}" class="tick" text-anchor="end">{threshold_db:g} dB</text>')
    out.append('<polyline class="front" points="' + " ".join(f"{ax.sx(x):.1f},{ax.sy(y):.1f}" for x, y, _ in pts) + '"/>')
    for x, y, lid in pts:
        cls = "fail" if y < threshold_db else "pass"
        out.append(f'<circle cx="{ax.sx(x):.1f}" cy="{ax.sy(y):.1f}" r="4" class="pt {cls}" data-layer="{html.escape(lid)}">'
                   f'<title>{html.escape(lid)}: {y:.1f} dB</title></circle>')
    out.append(ax.labels("layer, in execution order", "output SQNR (dB)") + "</svg>")
    return "".join(out), len(pts)


def _compression(data: dict[str, Any]) -> str:
    """Size, latency and quality before/after, each changed layer, SQNR along depth and the diagnostics."""
    e = html.escape
    s = data["summary"]
    sqnr = {c["layer_id"]: _db(c.get("sqnr_db")) for c in data["comparison"].get("layers", [])}
    threshold = float(s.get("activations", {}).get("threshold_db", 20.0))

    def ratio(a: Any, b: Any) -> str:
        return f" ({b / a:.2f}×)" if isinstance(a, int | float) and isinstance(b, int | float) and a else ""

    head = [f"size {fmt_bytes(s['size_bytes_before'])} → <b>{fmt_bytes(s['size_bytes_after'])}</b>"
            f"{ratio(s['size_bytes_before'], s['size_bytes_after'])}",
            f"latency {fmt_ms(s['latency_ms_before'])} → {fmt_ms(s['latency_ms_after'])} ms{ratio(s['latency_ms_before'], s['latency_ms_after'])}"
            + (" (simulated: fake-quant runs float kernels)" if s.get("simulated") else ""),
            f"FLOPs {fmt_count(s['flops_before'])} → {fmt_count(s['flops_after'])}",
            f"output SQNR <b>{fmt_db(_db(s['output_sqnr_db']))}</b>, cosine {s['output_cosine']:.5f}"]
    if s.get("accuracy_before") is not None:
        head.append(f"top-1 {fmt_pct(s['accuracy_before'])} → <b>{fmt_pct(s['accuracy_after'])}</b>")
    if s.get("ort_int8_speedup") is not None:
        head.append(f"ONNX Runtime int8 speed-up {s['ort_int8_speedup']:.2f}×")
    technique = {r["layer_id"]: r["technique"] for r in data.get("resolved", [])}
    rows = []
    for d in data["layers"]:
        lid = d["layer_id"]
        q = sqnr.get(lid)
        rows.append(f"<tr><td>{e(lid)}</td><td>{e(d.get('technique') or technique.get(lid) or '-')}</td>"
                    f"{cell(d['latency_ms_before'], fmt_ms(d['latency_ms_before']))}{cell(d['latency_ms_after'], fmt_ms(d['latency_ms_after']))}"
                    f"{cell(d['weight_bytes_before'], fmt_bytes(d['weight_bytes_before']))}"
                    f"{cell(d['weight_bytes_after'], fmt_bytes(d['weight_bytes_after']))}"
                    f"{cell(q, fmt_db(q) if q is not None else '')}</tr>")
    svg, _ = _sqnr_svg(list(data["comparison"].get("layers", [])), threshold)
    diags = "".join(f"<div class='bad'><b>{e(d.get('kind', ''))}</b> ({e(', '.join(d.get('layer_ids', [])))}): {e(d['message'])}"
                    f"<br><span class='muted'>{e(d.get('evidence', ''))}</span><br>Fix: {e(d.get('fix', ''))}</div>"
                    for d in data["diagnostics"])
    return (f"<h2>Compression: before → after</h2><p>{' · '.join(head)}</p>"
            + "".join(f"<div class='note'>{e(w)}</div>" for w in [*s.get("warnings", []), *data["comparison"].get("notes", [])])
            + f"<h3>Output SQNR along depth (red: under {threshold:g} dB)</h3>{svg}"
            + "<h3>Layer by layer (click a header to sort)</h3><table class='sortable' id='compressed'><thead><tr><th>layer</th>"
            "<th>technique</th><th>ms before</th><th>ms after</th><th>weights before</th><th>weights after</th><th>SQNR</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>"
            + (f"<h3>Diagnostics ({len(data['diagnostics'])})</h3>{diags}" if data["diagnostics"] else
               "<p>Diagnostics: nothing found.</p>"))


def profile_html(p: Profile, compare: Profile | None = None, names: tuple[str, str] = ("A", "B"),
                 onnx: OnnxProfile | None = None, compressed: dict[str, Any] | None = None) -> str:
    """The report of ``p`` (with its comparison with ``compare``, the compiled ops ``onnx`` and a compress report
    ``compressed`` when given) as one self-contained HTML page."""
    e = html.escape
    m, s, hw = p.model, p.summary, p.hardware
    svg, dots = _roofline_svg(p)
    peak, peak_dtype = hw.peak_for(m.compute_dtype)
    notes = [*m.capture_notes, *hw.notes, *s.warnings] + ([w] if (w := p.roof_warning()) else [])
    by = "FLOPs (static profile: nothing timed)" if p.static else "measured latency"
    body = [f"<h1>LayerScope profile: {e(m.name)}</h1>",
            f"<div class='muted'>inputs {e(', '.join('x'.join(map(str, sh)) for sh in m.input_shapes))} {e('/'.join(m.input_dtypes))}"
            f" · captured with {e(m.capture_method.value)} · {e(hw.name)}: {peak:.1f} GFLOP/s {e(peak_dtype)}, "
            f"{hw.bandwidth_gbs:.1f} GB/s</div>",
            f"<p><b>{len(p.graph)}</b> layers · params {m.total_params:,} · weights {fmt_bytes(m.total_weight_bytes)} · "
            f"MACs {fmt_count(p.total_macs)} · FLOPs {fmt_count(p.total_flops)}"
            + ("" if p.static else f" · <b>{fmt_ms(s.end_to_end_ms)} ms</b> end to end (median of {s.runs} runs, {s.threads} "
                                   f"thread(s)) · peak memory {fmt_bytes(s.peak_memory_bytes)}") + "</p>"]
    body += [f"<div class='note'>{e(n)}</div>" for n in notes]
    body.append(f"<h2>Roofline</h2><p>{dots} of {len(p.graph)} layers plotted (the others have no FLOPs or no measured time: "
                f"views, copies, unknown ops). Blue: memory-bound; red: compute-bound. Hover a dot for the layer.</p>{svg}")
    body.append(f"<h2>Layers ranked by {by} (click a header to sort)</h2><table class='sortable'><thead><tr><th>#</th>"
                "<th>layer</th><th>type</th><th>latency ms</th><th>± IQR</th><th>share</th><th>FLOPs</th><th>bytes</th>"
                "<th>FLOP/B</th><th>bound</th><th>% roof</th><th>source</th></tr></thead><tbody>"
                + _layer_rows(p.ranked()) + "</tbody></table>")
    body.append("<h2>By op type</h2>" + _totals(p, "type") + "<h2>By module</h2>" + _totals(p, "module"))
    if compare is not None:
        body.append(_compare(p, compare, *names))
    for what, other_name in (("ONNX mapping", onnx.model_name if onnx is not None else None),
                             ("compress report", compressed.get("model") if compressed is not None else None)):
        if other_name is not None and other_name != m.name:
            body.append(f"<div class='bad'>The {what} is of {e(str(other_name))}, this profile of {e(m.name)}: "
                        f"its section below is not about this model.</div>")
    if onnx is not None:
        body.append(_compiled(onnx))
    if compressed is not None:
        body.append(_compression(compressed))
    return page(f"LayerScope profile: {m.name}", "".join(body))
