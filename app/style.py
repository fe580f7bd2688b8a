"""Colours shared by the views (one place, so graph, roofline and table agree)."""

from __future__ import annotations

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
