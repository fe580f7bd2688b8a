"""Roofline plot: log-log, the roof (bandwidth slope, compute ceiling) and its ridge point, one
dot per layer at (arithmetic intensity, attained GFLOP/s). Click a dot to select the layer."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from layerscope.profiler import Bound, Profile

from .state import AppState
from .style import SELECTED_COLOR, bound_color


class RooflineView(QWidget):
    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state
        self.ids: list[str] = []
        self.id_index: dict[str, int] = {}
        self.xy: dict[str, tuple[float, float]] = {}
        self.plot = pg.PlotWidget(background="w")
        self.plot.setLogMode(True, True)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setLabel("bottom", "Arithmetic intensity (FLOP/byte)")
        self.plot.setLabel("left", "Attained (GFLOP/s, measured)")
        self.roof = pg.PlotCurveItem(pen=pg.mkPen((30, 30, 30), width=2))
        # the slower of the measured bandwidths (a copy's read+write vs a read-only sum), dotted under the roof
        self.roof_alt = pg.PlotCurveItem(pen=pg.mkPen((90, 90, 90), width=1.2, style=Qt.PenStyle.DotLine))
        self.roof_alt_label = pg.TextItem(color=(90, 90, 90), anchor=(0, 0))
        self.ridge = pg.ScatterPlotItem(size=10, symbol="d", brush=pg.mkBrush(30, 30, 30))
        self.ridge_label = pg.TextItem(color=(30, 30, 30), anchor=(1.05, -0.1))
        # one item per bound class: a shared brush each, so 10,000 dots draw without per-dot brushes
        self.scatters = {b: pg.ScatterPlotItem(size=9, pen=pg.mkPen((60, 60, 60), width=0.6), brush=pg.mkBrush(bound_color(b, 200)),
                                               hoverable=True, tip=self._tip) for b in Bound}
        self.selected = pg.ScatterPlotItem(size=20, brush=None, pen=pg.mkPen(SELECTED_COLOR, width=3))
        # after a plan is applied: where each changed layer moved (hollow triangle) and the move itself
        self.moves = pg.PlotCurveItem(pen=pg.mkPen((120, 120, 120), width=1.2, style=Qt.PenStyle.DashLine), connect="pairs")
        self.after = pg.ScatterPlotItem(size=11, symbol="t", brush=None, pen=pg.mkPen((20, 150, 70), width=2), hoverable=True, tip=self._tip_after)
        self.after_ids: list[str] = []
        self.after_xy: dict[str, tuple[float, float]] = {}
        for item in (self.roof, self.roof_alt, self.roof_alt_label, self.ridge, self.ridge_label, self.moves, *self.scatters.values(),
                     self.after, self.selected):
            self.plot.addItem(item)
        for item in self.scatters.values():
            item.sigClicked.connect(self._on_click)
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        layout.addWidget(self.caption)
        self.after.sigClicked.connect(self._on_after_click)
        state.profileChanged.connect(lambda p: state.later(lambda: self._on_profile(p)))
        state.selectionChanged.connect(lambda _lid: state.later(lambda: self._on_selection(state.selected)))
        state.compressionChanged.connect(self._on_compression)

    def _on_after_click(self, _item: object, points: Any, _ev: object = None) -> None:
        if len(points):
            self.state.select_click(self.after_ids[points[0].data()])

    def _on_profile(self, p: Profile | None) -> None:
        self.ids, self.xy, self.id_index = [], {}, {}
        self.selected.setData([])
        if p is None:
            for item in self.scatters.values():
                item.setData([])
            self.roof.setData([], [])
            self.roof_alt.setData([], [])
            self.roof_alt_label.setText("")
            self.ridge.setData([])
            self.selected.setData([])
            self.caption.setText("")
            return
        hw, dtype = p.hardware, p.model.compute_dtype
        peak, peak_dtype = hw.peak_for(dtype)
        ridge = hw.ridge_point(dtype)
        skipped = 0
        px, py, pb = [], [], []
        for row in p.rows():
            pt = row.point
            # a static profile timed nothing: each layer sits on its roof, the most it could attain
            y = (pt.roof_gflops if p.static else pt.attained_gflops) if pt is not None else None
            if pt is None or not pt.intensity or not y:
                skipped += 1
                continue
            self.xy[row.layer.id] = (pt.intensity, y)
            px.append(pt.intensity)
            py.append(y)
            pb.append(pt.bound)
            self.ids.append(row.layer.id)
        self.id_index = {lid: i for i, lid in enumerate(self.ids)}
        self._draw_roof(p, [v[0] for v in self.xy.values()] or [ridge])
        lx, ly, bounds = np.log10(np.array(px, dtype=float)), np.log10(np.array(py, dtype=float)), np.array(pb, dtype=object)
        for b, item in self.scatters.items():
            idx = np.flatnonzero(bounds == b) if len(bounds) else np.zeros(0, dtype=int)
            self.state.later(lambda item=item, idx=idx: item.setData(x=lx[idx], y=ly[idx], data=idx))  # one class per turn
        if px:
            self.state.later(self.plot.getViewBox().autoRange)  # once every dot is in
        self.caption.setText(
            f"Roof: {hw.name} ({hw.kind}, {peak_dtype}). Left of the ridge: memory-bound (blue); right: compute-bound "
            f"(orange). {len(self.ids)} layers plotted"
            + (f", {skipped} not (views with no work, pure copies or unknown FLOPs)." if skipped else ".")
            + (" Dots above the sloped roof were served from cache, faster than the DRAM bandwidth that draws it."
               if hw.kind == "measured" else f" Timings were measured on this machine, not on {hw.name}: dots sit at "
               "this machine's speed and '% of roof' is not computed.")
            + (" Static profile: nothing was timed, so every dot sits on its roof (the most that layer could attain)."
               if p.static else "")
            + (f" ⚠ {warning}" if (warning := p.roof_warning()) else "")
        )
        self.plot.getViewBox().autoRange()

    def _draw_roof(self, p: Profile, intensities: list[float]) -> None:
        """The roof over the plotted intensities (a quarter below to four times above, the ridge included),
        a second, lower memory roof when two bandwidths were measured, and the ridge point."""
        hw, dtype = p.hardware, p.model.compute_dtype
        peak = hw.peak_for(dtype)[0]
        ridge = hw.ridge_point(dtype)
        xs = intensities
        lo, hi = min(min(xs), ridge) / 4, max(max(xs), ridge) * 4
        x = np.logspace(np.log10(lo), np.log10(hi), 200)
        self.roof.setData(np.log10(x), np.log10(hw.roof_gflops(x, dtype)))
        slower = hw.slower_roof(x, dtype)
        if slower is not None:
            name, xs_alt, ys_alt = slower
            self.roof_alt.setData(np.log10(xs_alt), np.log10(ys_alt))
            self.roof_alt_label.setText(f"{name} {hw.bandwidths_gbs[name]:.0f} GB/s" if len(xs_alt) else "")
            if len(xs_alt):
                k = len(xs_alt) // 3
                self.roof_alt_label.setPos(np.log10(xs_alt[k]), np.log10(ys_alt[k]))
        else:
            self.roof_alt.setData([], [])
            self.roof_alt_label.setText("")
        self.ridge.setData([{"pos": (np.log10(ridge), np.log10(peak))}])
        self.ridge_label.setText(f"ridge {ridge:.1f} FLOP/B\n{peak:.0f} GFLOP/s, {hw.bandwidth_gbs:.0f} GB/s")
        self.ridge_label.setPos(np.log10(ridge), np.log10(peak))

    def _on_compression(self, outcome) -> None:
        """Plot the compressed candidate's point for every layer the plan touched or changed."""
        self.after_ids, self.after_xy = [], {}
        if outcome is None or self.state.profile is None:
            self.after.setData([])
            self.moves.setData([], [])
            return
        changed = {d.layer_id for d in outcome.layers if d.technique or d.flops_after != d.flops_before}
        spots, seg_x, seg_y = [], [], []
        for lid in changed:
            pt = outcome.candidate_profile.roofline.get(lid)
            if pt is None or not pt.intensity or not pt.attained_gflops or lid not in self.xy:
                continue
            x, y = np.log10(pt.intensity), np.log10(pt.attained_gflops)
            self.after_xy[lid] = (pt.intensity, pt.attained_gflops)
            spots.append({"pos": (x, y), "data": len(self.after_ids)})
            self.after_ids.append(lid)
            x0, y0 = self.xy[lid]
            seg_x += [np.log10(x0), x]
            seg_y += [np.log10(y0), y]
        self.after.setData(spots)
        self.moves.setData(np.array(seg_x), np.array(seg_y))

    def _tip_after(self, x: float, y: float, data: Any) -> str:
        if data is None or data >= len(self.after_ids):
            return ""
        lid = self.after_ids[data]
        i, g = self.after_xy[lid]
        i0, g0 = self.xy[lid]
        return f"{lid} after compression\n{i0:.2f} → {i:.2f} FLOP/B, {g0:.2f} → {g:.2f} GFLOP/s"

    def _tip(self, x: float, y: float, data: Any) -> str:
        if data is None or data >= len(self.ids):
            return ""
        lid = self.ids[data]
        i, g = self.xy[lid]
        return f"{lid}\n{i:.2f} FLOP/B, {g:.2f} GFLOP/s"

    def _on_click(self, _item: Any, points: Any, ev: Any = None) -> None:
        if len(points):
            self.state.select_click(self.ids[int(points[0].data())])

    def spot_of(self, layer_id: str):
        """(item, spot) that draws ``layer_id`` (tests click it as a user would)."""
        i = self.id_index[layer_id]
        for item in self.scatters.values():
            for spot in item.points():
                if int(spot.data()) == i:
                    return item, spot
        raise KeyError(layer_id)

    def _on_selection(self, _layer_id: str) -> None:
        ids = [i for i in self.state.selected_set if i in self.xy]
        if not ids:
            self.selected.setData([])
            return
        xy = np.log10(np.array([self.xy[i] for i in ids], dtype=float))
        self.selected.setData(x=xy[:, 0], y=xy[:, 1], data=np.array([self.id_index[i] for i in ids]))

    def selected_layer(self) -> str | None:
        pts = self.selected.data
        return self.ids[int(pts[0]["data"])] if len(pts) else None

    def selected_layers(self) -> list[str]:
        return [self.ids[int(d)] for d in self.selected.data["data"]] if len(self.selected.data) else []
