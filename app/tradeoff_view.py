"""Trade-offs: every candidate of a sweep as a dot (quality against size or latency, switchable),
green where it meets every budget on the chosen target and red where it does not, the Pareto front
as a line, the knee ringed, the budgets as dashed lines. Clicking a dot picks the candidate: its
plan goes to the Compress panel (the reference profile is already in every view); Apply candidate
(or a double-click) measures it, and every view then shows the compressed model.

All numbers come from the core's ``SweepResult``; this view only draws them."""

from __future__ import annotations

import math
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from layerscope.profiler.sweep.report import axis_value, candidate_tooltip, cost_limit, quality_floor, quality_label

from .state import AppState
from .style import SELECTED_COLOR

PASS, FAIL = (46, 157, 87, 220), (217, 83, 79, 170)


class TradeoffView(QWidget):
    def __init__(self, state: AppState, controller=None) -> None:
        super().__init__()
        self.state = state
        self.controller = controller
        self.ids: list[int] = []  # candidate id per spot index
        self.xy: dict[int, tuple[float, float]] = {}
        self.axis = QComboBox()
        self.axis.addItem("Quality vs size", "size")
        self.axis.addItem("Quality vs latency", "latency")
        self.target = QComboBox()
        self.target.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.apply_btn = QPushButton("Apply candidate")
        self.apply_btn.setToolTip("Measure the picked candidate: every view then shows the compressed model")
        self.apply_btn.setEnabled(False)
        top = QHBoxLayout()
        top.addWidget(QLabel("Plot"))
        top.addWidget(self.axis)
        top.addWidget(QLabel("pass/fail on"))
        top.addWidget(self.target)
        top.addStretch(1)
        top.addWidget(self.apply_btn)
        self.plot = pg.PlotWidget(background="w")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.front = pg.PlotCurveItem(pen=pg.mkPen((31, 79, 191), width=2))
        self.dots = pg.ScatterPlotItem(size=10, pen=pg.mkPen((255, 255, 255), width=0.8), hoverable=True, tip=self._tip)
        self.knee = pg.ScatterPlotItem(size=22, brush=None, pen=pg.mkPen((31, 79, 191), width=1.5, style=Qt.PenStyle.DashLine))
        self.reference = pg.ScatterPlotItem(size=12, symbol="d", brush=pg.mkBrush(120, 120, 120))
        self.selected = pg.ScatterPlotItem(size=20, brush=None, pen=pg.mkPen(SELECTED_COLOR, width=3))
        budget_pen = pg.mkPen((199, 124, 0), width=1.5, style=Qt.PenStyle.DashLine)
        self.cost_line = pg.InfiniteLine(angle=90, pen=budget_pen)
        self.quality_line = pg.InfiniteLine(angle=0, pen=budget_pen)
        for item in (self.front, self.reference, self.dots, self.knee, self.selected, self.cost_line, self.quality_line):
            self.plot.addItem(item)
        self.caption = QLabel("Run `layerscope sweep MODEL --budgets …`, then File → History… → Open to see its trade-offs here.")
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.caption)
        self.dots.sigClicked.connect(self._on_click)
        self.axis.currentIndexChanged.connect(lambda _i: self.redraw())
        self.target.currentIndexChanged.connect(lambda _i: self.redraw())
        self.apply_btn.clicked.connect(self.apply_candidate)
        self.plot.scene().sigMouseClicked.connect(self._on_scene_click)
        state.sweepChanged.connect(self._on_sweep)
        state.candidateChanged.connect(self._on_candidate)
        state.busyChanged.connect(lambda _b: self._on_candidate(state.candidate))

    # ------------------------------------------------------------------ drawing
    def _on_sweep(self, sweep) -> None:
        self.target.blockSignals(True)
        self.target.clear()
        if sweep is not None:
            self.target.addItem("every target", "")
            for t in sweep.budgets.targets:
                self.target.addItem(t, t)
        self.target.blockSignals(False)
        self.redraw()

    def redraw(self) -> None:
        sweep = self.state.sweep
        self.ids, self.xy = [], {}
        if sweep is None:
            for item in (self.dots, self.knee, self.reference, self.selected):
                item.setData([])
            self.front.setData([], [])
            self.cost_line.hide()
            self.quality_line.hide()
            return
        axis = self.axis.currentData()
        target = self.target.currentData() or None
        xs, ys, brushes = [], [], []
        for c in sweep.candidates:
            if not c.ok:
                continue
            x, y = axis_value(sweep, c, axis), axis_value(sweep, c, "quality")
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            self.ids.append(c.id)
            self.xy[c.id] = (x, y)
            xs.append(x)
            ys.append(y)
            brushes.append(pg.mkBrush(*(PASS if c.passes(target) else FAIL)))
        self.dots.setData(xs, ys, brush=brushes, data=list(range(len(xs))),
                          size=[13 if i in self._front() else 9 for i in self.ids])
        line = [self.xy[i] for i in self._front() if i in self.xy]
        self.front.setData([p[0] for p in line], [p[1] for p in line])
        knee = sweep.knee_size if axis == "size" else sweep.knee_latency
        self.knee.setData([self.xy[knee][0]], [self.xy[knee][1]]) if knee in self.xy else self.knee.setData([])
        ref = sweep.reference.get("top1")
        if sweep.quality == "top1" and ref is not None:
            self.reference.setData([1.0], [100 * ref])
        else:
            self.reference.setData([])
        for line_item, value in ((self.cost_line, cost_limit(sweep, axis)), (self.quality_line, quality_floor(sweep))):
            if value is None:
                line_item.hide()
            else:
                line_item.setValue(value)
                line_item.show()
        xlabel = "size (compressed ÷ original)" if axis == "size" else f"latency ratio on {sweep.latency_target()}"
        self.plot.setLabel("bottom", xlabel)
        self.plot.setLabel("left", quality_label(sweep))
        self.plot.enableAutoRange()
        n_pass = len(sweep.passing) if target is None else len(sweep.per_target.get(target, ()))
        text = (f"Sweep run #{sweep.run_id} of {sweep.model}: {len(sweep.candidates)} candidates, {n_pass} meet every budget"
                f"{'' if target is None else f' on {target}'} ({sweep.budgets.text()}). Blue line: the Pareto front; dashed: budgets. "
                f"Click a dot to load its plan into Compress.")
        if sweep.why_none:
            text += f"<br><span style='color:#b22'>{sweep.why_none}</span>"
        self.caption.setText(text)
        self._on_candidate(self.state.candidate)

    def _front(self) -> tuple[int, ...]:
        sweep = self.state.sweep
        if sweep is None:
            return ()
        return sweep.front_size if self.axis.currentData() == "size" else sweep.front_latency

    def _tip(self, x: float, y: float, data: Any) -> str:
        sweep = self.state.sweep
        if sweep is None or data is None or data >= len(self.ids):
            return ""
        return candidate_tooltip(sweep, sweep.by_id(self.ids[data]))

    # ------------------------------------------------------------------ picking
    def _on_click(self, _item: Any, points: Any, ev: Any = None) -> None:
        if len(points):
            self.state.pick_candidate(self.ids[int(points[0].data())])

    def _on_scene_click(self, ev) -> None:
        if ev.double() and self.state.candidate:
            self.apply_candidate()

    def spot_of(self, candidate_id: int):
        """(item, spot) that draws the candidate (tests click it as a user would)."""
        i = self.ids.index(candidate_id)
        return self.dots, self.dots.points()[i]

    def _on_candidate(self, candidate_id: int) -> None:
        if candidate_id in self.xy:
            x, y = self.xy[candidate_id]
            self.selected.setData([x], [y])
        else:
            self.selected.setData([])
        self.apply_btn.setEnabled(bool(candidate_id) and self.controller is not None and not self.state.busy)

    def apply_candidate(self) -> None:
        if self.controller is not None and self.state.plan is not None and self.state.candidate and not self.state.busy:
            self.controller.compress(self.state.plan)
