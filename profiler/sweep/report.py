"""A sweep as files a user sends on: one self-contained HTML report (inline SVG trade-off plots with
a tooltip per candidate, budget lines, the front and its knee, pass/fail per target; no network at
view time), a CSV with one row per candidate, and a plan file per candidate."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from ..files.safeio import OutputFolder, atomic_write_text, csv_text
from ..format import fmt_bytes
from ..reports.html import Axes, page, ticks
from .result import Candidate, SweepResult

__all__ = ["sweep_html", "sweep_csv", "write_plans", "quality_label", "axis_value", "candidate_tooltip", "cost_limit", "quality_floor"]

MIB = 2**20


def quality_label(result: SweepResult) -> str:
    return "top-1 accuracy (%)" if result.quality == "top1" else "output SQNR vs float (dB)"


def axis_value(result: SweepResult, c: Candidate, axis: str) -> float:
    """A candidate's coordinate: ``size`` / ``latency`` (ratio to the float model) or ``quality``
    (top-1 in %, or SQNR in dB with an unchanged output's infinite SQNR drawn at 99 dB)."""
    m = c.metrics or {}
    if axis == "size":
        return float(m.get("size_ratio", math.nan))
    if axis == "latency":
        v = m.get("targets", {}).get(result.latency_target(), {}).get("latency_ratio")
        return math.nan if v is None else float(v)
    q = result.quality_of(c)
    if result.quality == "top1":
        return 100.0 * q
    return min(q, 99.0) if not math.isnan(q) else math.nan


def quality_floor(result: SweepResult) -> float | None:
    b = result.budgets
    if result.quality == "top1" and b.max_top1_drop_points is not None and result.reference.get("top1") is not None:
        return 100.0 * result.reference["top1"] - b.max_top1_drop_points
    if result.quality == "output_sqnr_db":
        return b.min_output_sqnr_db
    return None


def cost_limit(result: SweepResult, axis: str) -> float | None:
    b = result.budgets
    if axis == "size":
        if b.max_size_ratio is not None:
            return b.max_size_ratio
        if b.max_size_mib is not None and result.reference.get("size_bytes"):
            return b.max_size_mib * MIB / result.reference["size_bytes"]
        return None
    if b.max_latency_ratio is not None:
        return b.max_latency_ratio
    ref = result.reference.get("latency_ms")
    return b.max_latency_ms / ref if b.max_latency_ms is not None and ref and result.latency_target() == "this" else None


def _svg(result: SweepResult, axis: str) -> str:
    ok = [c for c in result.candidates if c.ok and c.metrics]
    pts = [(c, axis_value(result, c, axis), axis_value(result, c, "quality")) for c in ok]
    pts = [(c, x, y) for c, x, y in pts if math.isfinite(x) and math.isfinite(y)]
    xs = [x for _, x, _ in pts] + [1.0]
    ys = [y for _, _, y in pts]
    ref_q = result.reference.get("top1")
    if result.quality == "top1" and ref_q is not None:
        ys.append(100.0 * ref_q)
    floor, limit = quality_floor(result), cost_limit(result, axis)
    xs += [limit] if limit is not None else []
    ys += [floor] if floor is not None else []
    if not ys:
        return "<p>No candidate to plot.</p>"
    x1 = max(xs) * 1.05
    x0 = 0.0 if axis == "size" else max(0.0, min(xs) - 0.15 * (x1 - min(xs)))  # ratios near 1: zoom in
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or 1.0
    ax = Axes(x0, x1, y0 - pad, y1 + pad, W=520, H=340, L=56, B=44)
    sx, sy = ax.sx, ax.sy
    out = ax.start()
    out.append(ax.grid_x(ticks(ax.x0, ax.x1)) + ax.grid_y(ticks(ax.y0, ax.y1)))
    xlabel = "size (compressed ÷ original)" if axis == "size" else f"latency ratio on {result.latency_target()}"
    out.append(ax.labels(xlabel, quality_label(result)))
    if limit is not None:
        out.append(f'<line x1="{sx(limit):.1f}" x2="{sx(limit):.1f}" y1="{ax.T}" y2="{ax.H - ax.B}" class="budget"><title>budget: '
                   f'{xlabel} ≤ {limit:.3g}</title></line>')
    if floor is not None:
        out.append(f'<line x1="{ax.L}" x2="{ax.W - ax.R}" y1="{sy(floor):.1f}" y2="{sy(floor):.1f}" class="budget"><title>quality floor '
                   f'{floor:.4g}</title></line>')
    front = result.front_size if axis == "size" else result.front_latency
    by_id = {c.id: (x, y) for c, x, y in pts}
    line = [by_id[i] for i in front if i in by_id]
    if len(line) > 1:
        out.append('<polyline class="front" points="' + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line) + '"/>')
    if result.quality == "top1" and ref_q is not None:
        out.append(f'<rect x="{sx(1.0) - 5:.1f}" y="{sy(100 * ref_q) - 5:.1f}" width="10" height="10" class="ref" '
                   f'transform="rotate(45 {sx(1.0):.1f} {sy(100 * ref_q):.1f})"><title>float model</title></rect>')
    knee = result.knee_size if axis == "size" else result.knee_latency
    for c, x, y in pts:
        passes = " ".join(f'data-{_slug(t)}="{int(c.passes(t))}"' for t in result.budgets.targets)
        cls = ("pass" if c.passes() else "fail") + (" onfront" if c.id in front else "")
        tip = candidate_tooltip(result, c)
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{6 if c.id in front else 4.5}" class="pt {cls}" '
                   f'data-all="{int(c.passes())}" {passes}><title>{html.escape(tip)}</title></circle>')
        if c.id == knee:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="10" class="knee"/><text x="{sx(x) + 12:.1f}" '
                       f'y="{sy(y) - 8:.1f}" class="tick">knee #{c.id}</text>')
    out.append("</svg>")
    return "".join(out)


def _slug(target: str) -> str:
    return "t-" + "".join(ch if ch.isalnum() else "-" for ch in target.lower())


def candidate_tooltip(result: SweepResult, c: Candidate) -> str:
    m = c.metrics or {}
    lat = m.get("targets", {}).get(result.latency_target(), {})
    lines = [f"#{c.id} {c.label}", f"size {fmt_bytes(m.get('size_bytes', 0))} (×{m.get('size_ratio', math.nan):.3f})",
             f"latency {lat.get('latency_ms', math.nan):.3g} ms (×{lat.get('latency_ratio', math.nan):.2f}) on {result.latency_target()}"]
    if lat.get("ort_int8_ms") is not None:
        lines.append(f"ONNX Runtime int8 {lat['ort_int8_ms']:.3g} ms vs float {lat['ort_float_ms']:.3g} ms")
    if m.get("top1") is not None:
        lines.append(f"top-1 {100 * m['top1']:.2f}% (drop {m['top1_drop_points']:.2f} points)")
    lines.append(f"output SQNR {_db(m.get('output_sqnr_db'))}, cosine {m.get('output_cosine', math.nan):.4f}")
    lines.append("passes every budget" if c.passes() else "fails " + ", ".join(c.failed()))
    return "\n".join(lines)


def _db(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str) or (isinstance(v, float) and math.isinf(v)):
        return "∞ dB (unchanged)"
    return f"{v:.1f} dB"


def _bytes_cell(v: int | None) -> str:
    return "<td>-</td>" if v is None else f"<td data-v='{v}'>{fmt_bytes(v)}</td>"


def _cell(v: Any, fmt: str = "{:.3g}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "<td>-</td>"
    return f'<td data-v="{v}">{fmt.format(v)}</td>'


_JS = """
function showTarget(t){document.querySelectorAll('circle.pt').forEach(function(c){
  var p=c.getAttribute(t==='all'?'data-all':'data-'+t);c.classList.toggle('pass',p==='1');c.classList.toggle('fail',p!=='1');});}
"""


def sweep_html(result: SweepResult, plan_dir: str | None = None, machine: str = "") -> str:
    """The whole report as one HTML document (CSS, SVG and a few lines of JS inline)."""
    e = html.escape
    b = result.budgets
    ref = result.reference
    n_ok = sum(c.ok for c in result.candidates)
    parts = [f"<h1>Compression trade-offs: {e(result.model)}</h1>",
             f"<div class='muted'>sweep run #{result.run_id} ({result.status}, {e(result.search)} search) · model hash "
             f"{result.model_hash[:12]} · {e(machine)} · history {e(result.history)}</div>",
             f"<p>Float model: {fmt_bytes(ref.get('size_bytes', 0))}, {ref.get('latency_ms', math.nan):.3g} ms here"
             + (f", top-1 {100 * ref['top1']:.2f}%" if ref.get("top1") is not None else "")
             + f". <b>{len(result.candidates)}</b> candidates measured ({len(result.candidates) - n_ok} not applicable), "
               f"<b>{len(result.passing)}</b> meet every budget on every target.</p>",
             f"<p>Budgets: {e(b.text())}; targets: {e(', '.join(b.targets))}. Latency on <code>this</code> is measured "
             f"(eager, median, interleaved with the float model); on a device profile it is a roofline estimate.</p>"]
    if result.why_none:
        parts.append(f"<div class='bad'>{e(result.why_none)}</div>")
    for n in result.notes:
        parts.append(f"<div class='note'>{e(n)}</div>")
    if any((c.metrics or {}).get("simulated") for c in result.candidates):
        parts.append("<div class='note'>Quantised and palettised weights run as fake-quant (float kernels) in eager PyTorch: their "
                     "sizes are real, their eager latency does not show an int8 speed-up. The ONNX Runtime int8 column is the "
                     "real-kernel measurement, where the plan can be expressed in ORT.</div>")
    opts = "".join(f"<option value='{_slug(t)}'>{e(t)}</option>" for t in b.targets)
    parts.append(f"<h2>Trade-off curves</h2><p>Colour by pass/fail on <select onchange='showTarget(this.value)'>"
                 f"<option value='all'>every target</option>{opts}</select>. Blue line: the Pareto front; dashed: budgets; "
                 f"grey diamond: the float model. Hover a point for its recipe.</p>")
    parts.append(f"<div class='plots'>{_svg(result, 'size')}{_svg(result, 'latency')}</div>")
    parts.append("<h2>Recommended: candidates that meet every budget</h2>")
    if result.passing:
        parts.append(_table(result, [result.by_id(i) for i in result.passing], plan_dir, rank=True))
    else:
        parts.append("<p>None.</p>" + ("" if not result.closest else "<p>Closest:</p>"
                                      + _table(result, [result.by_id(i) for i in result.closest], plan_dir)))
    parts.append("<h2>Every candidate (click a header to sort)</h2>")
    parts.append(_table(result, list(result.candidates), plan_dir))
    if result.sensitivity:
        rows = "".join(f"<tr><td>{k}</td><td>{e(s.layer_id)}</td><td>{_db(s.output_sqnr_db)}</td>"
                       f"<td>{'-' if s.top1_drop_points is None else f'{s.top1_drop_points:.2f}'}</td></tr>"
                       for k, s in enumerate(result.sensitivity, 1))
        parts.append("<h2>Layer sensitivity (one layer compressed at a time, most sensitive first)</h2>"
                     "<table><thead><tr><th>#</th><th>layer</th><th>output SQNR</th><th>top-1 drop (points)</th></tr></thead>"
                     f"<tbody>{rows}</tbody></table>")
    return page(f"LayerScope sweep: {result.model}", "".join(parts), _JS)


def _table(result: SweepResult, cands: list[Candidate], plan_dir: str | None, rank: bool = False) -> str:
    e = html.escape
    targets = result.budgets.targets
    head = ["#", "recipe", "size", "size ×", "latency ms", "latency ×", "ORT int8 ms", "peak memory", "top-1 %", "drop pts", "SQNR dB",
            "front"] + [f"pass: {t}" for t in targets] + (["plan"] if plan_dir else [])
    rows = []
    for k, c in enumerate(cands, 1):
        if not c.ok:
            rows.append(f"<tr><td>{c.id}</td><td>{e(c.label)}</td><td colspan='{len(head) - 2}' class='muted'>not applicable: "
                        f"{e(c.error or '')}</td></tr>")
            continue
        m = c.metrics or {}
        lat = m["targets"].get(result.latency_target(), {})
        front = ("size" if c.id in result.front_size else "") + (" latency" if c.id in result.front_latency else "")
        if c.id in (result.knee_size, result.knee_latency):
            front += " (knee)"
        sq = m.get("output_sqnr_db")
        cells = [f"<td>{k if rank else c.id}</td>", f"<td>{e(c.label)}</td>", f"<td data-v='{m['size_bytes']}'>{fmt_bytes(m['size_bytes'])}</td>",
                 _cell(m["size_ratio"]), _cell(lat.get("latency_ms")), _cell(lat.get("latency_ratio"), "{:.2f}"),
                 _cell(lat.get("ort_int8_ms")), _bytes_cell(m.get("peak_memory_bytes")),
                 _cell(100 * m["top1"] if m.get("top1") is not None else None, "{:.2f}"), _cell(m.get("top1_drop_points"), "{:.2f}"),
                 _cell(99.0 if isinstance(sq, str) or (isinstance(sq, float) and math.isinf(sq)) else sq, "{:.1f}"),
                 f"<td>{front.strip()}</td>"]
        for t in targets:
            ok = c.passes(t)
            fails = ", ".join(c.failed(t))
            cells.append(f"<td class='{'ok' if ok else 'no'}' title='{e(fails)}'>{'✓' if ok else '✗ ' + e(fails)}</td>")
        if plan_dir:
            cells.append(f"<td><code>{e(str(Path(plan_dir) / plan_name(c)))}</code></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ("<table class='sortable'><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def plan_name(c: Candidate) -> str:
    return f"candidate-{c.id:03d}.plan.json"


def write_plans(result: SweepResult, folder: str | Path, force: bool = False) -> tuple[list[Path], list[str]]:
    """A plan file per measured candidate, and ``best.plan.json`` (the first recommended) when one passes, into
    a folder LayerScope may fill (``safeio.OutputFolder``; ``force``: one of the user's). Returns the files
    written and the names of an earlier run's plans removed (no stale candidate is left to be mistaken)."""
    written = []
    target = OutputFolder(folder, "--out", force)
    with target as root:
        for c in result.candidates:
            if c.plan is not None:
                written.append(atomic_write_text(root / plan_name(c), json.dumps(c.plan, indent=1), "plan"))
        if result.passing:
            written.append(atomic_write_text(root / "best.plan.json", json.dumps(result.by_id(result.passing[0]).plan, indent=1),
                                             "plan"))
    return written, target.stale


def sweep_csv(result: SweepResult) -> str:
    targets = result.budgets.targets
    header = (["id", "recipe", "technique", "strength", "layers", "keep_int8", "error", "size_bytes", "size_ratio",
               "latency_ms", "latency_ratio", "ort_float_ms", "ort_int8_ms", "peak_memory_bytes", "top1", "top1_drop_points",
               "output_sqnr_db", "output_cosine", "front_size", "front_latency", "knee", "passes_all"]
              + [f"{k}:{t}" for t in targets for k in ("latency_ms", "latency_ratio", "pass", "failed")])
    rows = []
    for c in result.candidates:
        m = c.metrics or {}
        r = c.recipe
        this = m.get("targets", {}).get(result.latency_target(), {})
        row = [c.id, c.label, r["technique"], r["strength"], r.get("layers"), r.get("keep"), c.error or "", m.get("size_bytes"),
               m.get("size_ratio"), this.get("latency_ms"), this.get("latency_ratio"), this.get("ort_float_ms"),
               this.get("ort_int8_ms"), m.get("peak_memory_bytes"), m.get("top1"), m.get("top1_drop_points"),
               m.get("output_sqnr_db"), m.get("output_cosine"), int(c.id in result.front_size), int(c.id in result.front_latency),
               int(c.id in (result.knee_size, result.knee_latency)), int(c.passes())]
        for t in targets:
            tt = m.get("targets", {}).get(t, {})
            row += [tt.get("latency_ms"), tt.get("latency_ratio"), int(c.passes(t)), " ".join(c.failed(t))]
        rows.append(row)
    return csv_text(header, rows)
