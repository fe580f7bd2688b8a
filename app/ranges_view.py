"""Activation ranges view: reference vs candidate for the selected layer, SQNR along depth, and the
ranked range diagnostics. Filled after each Apply in the compression panel (the comparison and the
diagnostics come from the core: profiler/ranges.py and profiler/diagnose.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QSplitter, QVBoxLayout, QWidget

from layerscope.profiler.compare import ActivationComparison, shared_histograms
from layerscope.profiler.compression.activations import quant_range
from layerscope.profiler.format import fmt_db

from .state import AppState

REF_COLOR = (40, 110, 200)
CAND_COLOR = (220, 110, 20)


class RangesView(QWidget):
    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state
        self.cmp: ActivationComparison | None = None
        self.positions: list[str] = []
        self._position: dict[str, int] = {}

        self.diag_list = QListWidget()
        self.diag_list.setWordWrap(True)
        self.diag_list.itemClicked.connect(self._on_diag)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(QLabel("<b>Diagnostics</b> (worst first; click to select the culprit)"))
        lv.addWidget(self.diag_list)

        self._sqnr_plot()
        right = self._layer_panel()

        self.split = split = QSplitter()
        split.addWidget(left)
        split.addWidget(self.sqnr_plot)
        split.addWidget(right)
        for k, stretch in enumerate((2, 3, 4)):
            split.setStretchFactor(k, stretch)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)
        state.analysisChanged.connect(self._on_analysis)
        state.selectionChanged.connect(self._on_selection)

    def _sqnr_plot(self) -> None:
        """Output SQNR per layer along depth, with the broken-layer threshold and the selected bar."""
        self.sqnr_plot = pg.PlotWidget(background="w")
        self.sqnr_plot.setLabel("bottom", "layer, in execution order")
        self.sqnr_plot.setLabel("left", "output SQNR (dB)")
        self.sqnr_plot.showGrid(y=True, alpha=0.2)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.8, brush=pg.mkBrush(120, 160, 210))
        self.exact_bars = pg.BarGraphItem(x=[], height=[], width=0.8, brush=pg.mkBrush(200, 220, 200))
        self.sel_bar = pg.BarGraphItem(x=[], height=[], width=0.8, brush=pg.mkBrush(30, 160, 60))
        self.threshold = pg.InfiniteLine(angle=0, pos=20, pen=pg.mkPen((200, 40, 40), width=1.5, style=Qt.PenStyle.DashLine),
                                         label="20 dB", labelOpts={"position": 0.9, "color": (200, 40, 40), "anchors": [(0, 1), (0, 1)]})
        for item in (self.exact_bars, self.bars, self.sel_bar, self.threshold):
            self.sqnr_plot.addItem(item)
        self.sqnr_plot.scene().sigMouseClicked.connect(self._on_depth_click)
        self.sqnr_plot.scene().sigMouseMoved.connect(self._on_depth_hover)

    def _layer_panel(self) -> QWidget:
        """The selected layer: reference vs candidate histograms, per-channel ranges, and what they say."""
        self.hist = pg.PlotWidget(background="w")
        self.hist.setLabel("bottom", "activation value")
        self.hist.setLabel("left", "count")
        self.hist.addLegend(offset=(-10, 10))
        self.ref_curve = pg.PlotCurveItem(pen=pg.mkPen(REF_COLOR, width=2), name="reference",
                                          fillLevel=0, brush=pg.mkBrush(*REF_COLOR, 50))
        self.cand_curve = pg.PlotCurveItem(pen=pg.mkPen(CAND_COLOR, width=2), name="candidate")
        self.q_lines = [pg.InfiniteLine(angle=90, pen=pg.mkPen((120, 120, 120), style=Qt.PenStyle.DotLine)) for _ in range(2)]
        for item in (self.ref_curve, self.cand_curve, *self.q_lines):
            self.hist.addItem(item)
        self.log_y = QCheckBox("log counts")
        self.log_y.toggled.connect(lambda on: self.hist.setLogMode(False, on))

        self.channels = pg.PlotWidget(background="w")
        self.channels.setLabel("bottom", "channel")
        self.channels.setLabel("left", "min … max")
        self.ref_ch = pg.ErrorBarItem(x=np.array([]), y=np.array([]), top=np.array([]), bottom=np.array([]), beam=0.0,
                                      pen=pg.mkPen(REF_COLOR, width=3))
        self.cand_ch = pg.ErrorBarItem(x=np.array([]), y=np.array([]), top=np.array([]), bottom=np.array([]), beam=0.0,
                                       pen=pg.mkPen(CAND_COLOR, width=1.5))
        self.channels.addItem(self.ref_ch)
        self.channels.addItem(self.cand_ch)

        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.caption.setTextFormat(Qt.TextFormat.RichText)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        self.title = QLabel("Apply a plan in the Compress panel to compare activation ranges.")
        self.title.setWordWrap(True)
        top.addWidget(self.title, 1)
        top.addWidget(self.log_y)
        rv.addLayout(top)
        rv.addWidget(self.hist, 3)
        rv.addWidget(self.channels, 2)
        rv.addWidget(self.caption)
        return right

    # ------------------------------------------------------------------ data
    def _on_analysis(self, analysis) -> None:
        self.diag_list.clear()
        self.cmp = analysis[0] if analysis else None
        if self.cmp is None:
            self.positions, self._position = [], {}
            for b in (self.bars, self.exact_bars, self.sel_bar):
                b.setOpts(x=[], height=[])
            self.title.setText("Apply a plan in the Compress panel to compare activation ranges.")
            self.sqnr_plot.getAxis("bottom").setTicks(None)
            self._show_layer("")
            return
        curve = self.cmp.sqnr_curve()
        self.positions = [lid for _, lid, _ in curve]
        self._position = {lid: k for k, lid in enumerate(self.positions)}
        finite = [v for _, _, v in curve if math.isfinite(v)]
        cap = (max(finite) if finite else 60.0) + 10
        xs = np.arange(len(curve))
        heights = np.array([v if math.isfinite(v) else np.nan for _, _, v in curve])
        self.bars.setOpts(x=xs[np.isfinite(heights)], height=heights[np.isfinite(heights)])
        self.exact_bars.setOpts(x=xs[~np.isfinite(heights)], height=np.full(int((~np.isfinite(heights)).sum()), cap))
        first = self.cmp.first_below(self.threshold.value())
        self.title.setText(f"<b>{self.cmp.reference}</b> vs <b>{self.cmp.candidate}</b> · {self.cmp.samples} samples · "
                           f"first layer under {self.threshold.value():.0f} dB: {first.layer_id if first else 'none'}"
                           + (f" · <span style='color:#b58900'>⚠ {len(self.cmp.notes)} note(s)</span>" if self.cmp.notes else ""))
        self.title.setToolTip("\n".join(self.cmp.notes))
        for d in analysis[1]:
            item = QListWidgetItem(f"{d.kind.value}: {d.message}")
            item.setToolTip(f"evidence: {d.evidence}\nfix: {d.fix}")
            item.setData(Qt.ItemDataRole.UserRole, list(d.layer_ids))
            self.diag_list.addItem(item)
        if not analysis[1]:
            self.diag_list.addItem("No range diagnostics.")
        self.sqnr_plot.getViewBox().autoRange()
        self._name_ticks()
        w = max(self.split.width(), 900)
        self.split.setSizes([w * 2 // 9, w * 3 // 9, w * 4 // 9])
        self._on_selection(self.state.selected)

    def _name_ticks(self) -> None:
        """Layer names under the bars, as many as fit (every k-th), full names in the hover tooltip."""
        n = len(self.positions)
        fit = max(1, self.sqnr_plot.width() // 70)
        step = max(1, math.ceil(n / fit))
        ticks = [(float(k), _short(self.positions[k])) for k in range(0, n, step)]
        self.sqnr_plot.getAxis("bottom").setTicks([ticks, []] if n else None)

    def _on_depth_hover(self, pos) -> None:
        if not self.positions or self.cmp is None:
            return
        k = int(round(self.sqnr_plot.getViewBox().mapSceneToView(pos).x()))
        if 0 <= k < len(self.positions):
            lid = self.positions[k]
            self.sqnr_plot.setToolTip(f"{lid}: SQNR {fmt_db(self.cmp.layer(lid).sqnr_db)} (click to select)")

    def _on_diag(self, item: QListWidgetItem) -> None:
        ids = item.data(Qt.ItemDataRole.UserRole)
        if ids:
            self.state.select_many([i for i in ids if self.cmp and any(lc.layer_id == i for lc in self.cmp.layers)] or ids[:1])

    def _on_depth_click(self, ev: Any) -> None:
        if not self.positions:
            return
        p = self.sqnr_plot.getViewBox().mapSceneToView(ev.scenePos())
        k = int(round(p.x()))
        if 0 <= k < len(self.positions) and self.sqnr_plot.sceneBoundingRect().contains(ev.scenePos()):
            self.state.select(self.positions[k])

    def select_bar(self, index: int) -> None:
        """What a click on bar ``index`` does (used by tests)."""
        self.state.select(self.positions[index])

    def _on_selection(self, layer_id: str) -> None:
        k = self._position.get(layer_id)
        if k is not None and self.cmp is not None:
            sq = self.cmp.layer(layer_id).sqnr_db
            exact = self.exact_bars.opts["height"]
            self.sel_bar.setOpts(x=[k], height=[sq if sq is not None and math.isfinite(sq) else (exact[0] if len(exact) else 0)])
        else:
            self.sel_bar.setOpts(x=[], height=[])
        self._show_layer(layer_id)

    def _show_layer(self, layer_id: str) -> None:
        lc = None
        if self.cmp is not None and layer_id:
            lc = next((c for c in self.cmp.layers if c.layer_id == layer_id), None)
        if lc is None:
            self.ref_curve.setData([], [], stepMode=None)
            self.cand_curve.setData([], [], stepMode=None)
            self.ref_ch.setData(x=np.array([]), y=np.array([]), top=np.array([]), bottom=np.array([]))
            self.cand_ch.setData(x=np.array([]), y=np.array([]), top=np.array([]), bottom=np.array([]))
            self.caption.setText("" if self.cmp is None else "Select a layer (any view) to see its activation histogram.")
            return
        edges, ca, cb = shared_histograms(lc.reference, lc.candidate)
        self.ref_curve.setData(edges, ca, stepMode="center")
        self.cand_curve.setData(edges, cb if lc.candidate is not None else np.zeros_like(ca), stepMode="center")
        r = lc.reference
        for line, q in zip(self.q_lines, ("0.01", "99.99"), strict=True):
            line.setPos(r.percentiles[q])
        self._channels(lc)
        ops = "".join(f"<br>input <b>{o.source}</b>: [{o.min:.3g}, {o.max:.3g}] (|max| {o.absmax:.3g})" for o in lc.operands)
        quant = ""
        if lc.input_quantizer is not None:
            lo, hi = quant_range(*lc.input_quantizer)
            quant = (f"<br>int8 input range [{lo:.3g}, {hi:.3g}], clipped "
                     f"{(lc.input_clip_rate or 0):.3%}")
        sq = fmt_db(lc.sqnr_db, none="n/a (shape changed)")
        self.caption.setText(
            f"<b>{lc.layer_id}</b> ({lc.type_name}) · SQNR {sq} · reference [{r.min:.3g}, {r.max:.3g}], mean {r.mean:.3g}, "
            f"std {r.std:.3g}, p0.01…p99.99 {r.percentiles['0.01']:.3g} … {r.percentiles['99.99']:.3g}"
            + (f" · candidate [{lc.candidate.min:.3g}, {lc.candidate.max:.3g}]" if lc.candidate else "") + ops + quant
            + "<br><span style='color:#286ec8'>■</span> reference · <span style='color:#dc6e14'>■</span> candidate; "
              "dotted lines: reference p0.01 and p99.99; lower plot: per-channel min…max")

    def _channels(self, lc) -> None:
        def bars(stats, item) -> None:
            if stats is None or not stats.channel_min:
                item.setData(x=np.array([]), y=np.array([]), top=np.array([]), bottom=np.array([]))
                return
            lo, hi = np.array(stats.channel_min), np.array(stats.channel_max)
            mid = (lo + hi) / 2
            item.setData(x=np.arange(len(lo), dtype=float), y=mid, top=hi - mid, bottom=mid - lo)

        bars(lc.reference, self.ref_ch)
        bars(lc.candidate, self.cand_ch)
        self.channels.getViewBox().autoRange()


def _short(name: str, n: int = 14) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]
