"""What LayerScope's self-contained HTML reports share: one stylesheet, sortable tables, axis ticks.
No network at view time: everything is inline."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

__all__ = ["CSS", "SORT_JS", "ticks", "log_ticks", "page", "cell", "Axes"]

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
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style></head>"
            f"<body>{body}<script>{SORT_JS}{script}</script></body></html>")


def cell(value: float | int | None, text: str) -> str:
    """A table cell that sorts by ``value`` (``-`` when unknown) and shows ``text``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<td>-</td>"
    v = ("Infinity" if value > 0 else "-Infinity") if isinstance(value, float) and math.isinf(value) else value  # JS parseFloat
    return f"<td data-v='{v}'>{html.escape(text)}</td>"


@dataclass(frozen=True)
class Axes:
    """One inline SVG plot: the data ranges, the size and margins (left, right, top, bottom), linear or log10
    axes; ``sx``/``sy`` map data to pixels, and the frame, grid lines and axis labels are drawn the same in every
    report."""

    x0: float
    x1: float
    y0: float
    y1: float
    W: int = 620
    H: int = 380
    L: int = 64
    R: int = 16
    T: int = 16
    B: int = 46
    log_x: bool = False
    log_y: bool = False

    def sx(self, x: float) -> float:
        f = math.log10 if self.log_x else float
        return self.L + (f(x) - f(self.x0)) / (f(self.x1) - f(self.x0)) * (self.W - self.L - self.R)

    def sy(self, y: float) -> float:
        f = math.log10 if self.log_y else float
        return self.T + (f(self.y1) - f(y)) / (f(self.y1) - f(self.y0)) * (self.H - self.T - self.B)

    def start(self, svg_id: str = "") -> list[str]:
        """The opening tag and the plot frame: the list a caller appends its marks to (then ``</svg>``)."""
        ident = f' id="{svg_id}"' if svg_id else ""
        return [f'<svg class="plot"{ident} viewBox="0 0 {self.W} {self.H}" width="{self.W}" height="{self.H}" role="img">',
                f'<rect x="{self.L}" y="{self.T}" width="{self.W - self.L - self.R}" height="{self.H - self.T - self.B}" class="frame"/>']

    def grid_x(self, values: list[float]) -> str:
        return "".join(f'<line x1="{self.sx(t):.1f}" x2="{self.sx(t):.1f}" y1="{self.T}" y2="{self.H - self.B}" class="grid"/>'
                       f'<text x="{self.sx(t):.1f}" y="{self.H - self.B + 16}" class="tick" text-anchor="middle">{t:g}</text>'
                       for t in values if min(self.x0, self.x1) <= t <= max(self.x0, self.x1))

    def grid_y(self, values: list[float]) -> str:
        return "".join(f'<line x1="{self.L}" x2="{self.W - self.R}" y1="{self.sy(t):.1f}" y2="{self.sy(t):.1f}" class="grid"/>'
                       f'<text x="{self.L - 6}" y="{self.sy(t) + 4:.1f}" class="tick" text-anchor="end">{t:g}</text>'
                       for t in values if min(self.y0, self.y1) <= t <= max(self.y0, self.y1))

    def labels(self, x_label: str, y_label: str) -> str:
        mid_y = (self.T + self.H - self.B) / 2
        return (f'<text x="{(self.L + self.W - self.R) / 2}" y="{self.H - 8}" class="label" text-anchor="middle">'
                f'{html.escape(x_label)}</text><text x="14" y="{mid_y}" class="label" text-anchor="middle" '
                f'transform="rotate(-90 14 {mid_y})">{html.escape(y_label)}</text>')
