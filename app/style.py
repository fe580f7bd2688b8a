"""Colours shared by the views (one place, so graph, roofline and table agree)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtGui import QColor

from layerscope.profiler import Bound

BOUND_COLORS = {
    Bound.MEMORY: QColor("#2b8cbe"),
    Bound.COMPUTE: QColor("#e6550d"),
    Bound.NO_WORK: QColor("#9e9e9e"),
    Bound.UNKNOWN: QColor("#d4b000"),
}
MODULE_COLOR = QColor("#6a51a3")
SELECTED_COLOR = QColor("#31a354")


def bound_color(bound: Bound, alpha: int = 255) -> QColor:
    c = QColor(BOUND_COLORS[bound])
    c.setAlpha(alpha)
    return c


# Latency heat: pale yellow (fast) -> orange -> dark red (slowest); opaque so it reads zoomed out.
_HEAT = [(255, 237, 160), (254, 178, 76), (240, 59, 32), (128, 0, 38)]


def heat_color(t: float) -> QColor:
    """Colour for a relative latency ``t`` in [0, 1]."""
    t = min(max(t, 0.0), 1.0) * (len(_HEAT) - 1)
    i = min(int(t), len(_HEAT) - 2)
    f = t - i
    a, b = _HEAT[i], _HEAT[i + 1]
    return QColor(*(round(a[k] + (b[k] - a[k]) * f) for k in range(3)))


def fit_columns(view, sample: int = 60, first_max: int = 320, pad: int = 18) -> None:
    """Size a table's columns to the header and a sample of rows (top rows and the visible ones),
    not to every row: ``resizeColumnsToContents`` reads all 10,000 rows of a big model."""
    model = view.model()
    rows = model.rowCount()
    if model.columnCount() == 0:
        return
    fm = view.fontMetrics()
    header = view.horizontalHeader()
    top = view.rowAt(0)
    picks = sorted(set(range(min(sample, rows))) | set(range(max(top, 0), min(rows, max(top, 0) + sample // 2))))
    from PySide6.QtCore import Qt

    for c in range(model.columnCount()):
        head = str(model.headerData(c, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole) or "")
        width = fm.horizontalAdvance(head) + pad + 14  # room for the sort arrow
        for r in picks:
            text = model.data(model.index(r, c), Qt.ItemDataRole.DisplayRole)
            if text:
                width = max(width, fm.horizontalAdvance(str(text)) + pad)
        header.resizeSection(c, min(width, first_max) if c == 0 else min(width, 400))


def shaded_brushes(share: np.ndarray, kinds: list, heat: bool, levels: int) -> tuple[np.ndarray, list]:
    """Per spot, its shade level by latency share (sqrt scale, ``levels`` steps) and a brush: its bound's
    colour (a collapsed module's purple), darker when slower, or the latency heat colour; one shared brush
    per (kind, level), so a 10,000-spot graph holds a few dozen brushes."""
    import pyqtgraph as pg

    rel = np.sqrt(share / (share.max() or 1.0)) if len(share) else share
    level = np.minimum((rel * levels).astype(int), levels - 1)
    palette: dict[tuple, Any] = {}

    def brush(kind: Any, lv: int) -> Any:
        found = palette.get((kind, lv))
        if found is None:
            alpha = int(70 + 185 * (lv + 1) / levels)
            if heat:
                color = heat_color((lv + 0.5) / levels)
            elif kind == "module":
                color = QColor(MODULE_COLOR)
                color.setAlpha(alpha)
            else:
                color = bound_color(kind, alpha=alpha)
            found = palette[(kind, lv)] = pg.mkBrush(color)
        return found

    return level, [brush("heat" if heat else k, int(lv)) for k, lv in zip(kinds, level, strict=True)]
