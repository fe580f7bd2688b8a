"""What LayerScope's self-contained HTML reports share: one stylesheet, sortable tables, axis ticks.
No network at view time: everything is inline."""

from __future__ import annotations

import math

__all__ = ["CSS", "SORT_JS", "ticks", "log_ticks", "page", "cell"]

CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;max-width:1180px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}.muted{color:#667}
.plots{display:flex;flex-wrap:wrap;gap:18px}.plot{background:#fff;border:1px solid #dde}
.frame{fill:#fbfbfe;stroke:#ccd}.grid{stroke:#e6e8f0}.tick{font-size:11px;fill:#556}.label{font-size:12px;fill:#334}
.front{fill:none;stroke:#1f4fbf;stroke-width:2}.budget{stroke:#c77c00;stroke-width:1.5;stroke-dasharray:6 4}
.pt{stroke:#fff;stroke-width:1}.pt.pass{fill:#2e9d57}.pt.fail{fill:#d9534f;opacity:.75}.pt.onfront{stroke:#1f4fbf;stroke-width:2}
.knee{fill:none;stroke:#1f4fbf;stroke-width:1.5;stroke-dasharray:3 2}.ref{fill:#888}
table{border-collapse:collapse;font-size:13px}th,td{padding:4px 8px;border-bottom:1px solid #e3e5ee;text-align:right}
th{background:#f1f3f9;cursor:pointer;position:sticky;top:0}td:nth-child(2),th:nth-child(2){text-align:left}
.roof{fill:none;stroke:#222;stroke-width:2}.layer{stroke:#fff;stroke-width:.8}
.bar{background:#4c78a8;height:10px;display:inline-block;vertical-align:middle}
.ok{color:#2e7d32;font-weight:600}.no{color:#c62828}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:6px 0}
.bad{background:#fdecea;border-left:4px solid #d9534f;padding:6px 10px;margin:6px 0}code{background:#f1f3f9;padding:1px 4px}
"""


SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){
  var i=th.cellIndex,tb=th.closest('table').tBodies[0],asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
  var rows=Array.from(tb.rows).filter(function(r){return r.cells.length>i;}),rest=Array.from(tb.rows).filter(function(r){return r.cells.length<=i;});
  rows.sort(function(a,b){var x=a.cells[i],y=b.cells[i],u=x.dataset.v,v=y.dataset.v;
    var r=(u!==undefined&&v!==undefined)?(parseFloat(u)-parseFloat(v)):x.textContent.localeCompare(y.textContent);return asc?r:-r;});
  rows.concat(rest).forEach(function(r){tb.appendChild(r);});});});
"""


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo or 1.0
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [round(start + k * step, 10) for k in range(int((hi - start) / step) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten from below ``lo`` to above ``hi`` (both > 0)."""
    return [10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]


def page(title: str, body: str, script: str = "") -> str:
    """One self-contained HTML document."""
    import html

    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style></head>"
            f"<body>{body}<script>{SORT_JS}{script}</script></body></html>")


def cell(value: float | int | None, text: str) -> str:
    """A table cell that sorts by ``value`` (``-`` when unknown) and shows ``text``."""
    import html

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<td>-</td>"
    v = ("Infinity" if value > 0 else "-Infinity") if isinstance(value, float) and math.isinf(value) else value  # JS parseFloat
    return f"<td data-v='{v}'>{html.escape(text)}</td>"
