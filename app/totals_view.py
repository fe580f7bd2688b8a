"""Totals: time, FLOPs, bytes and params summed by op type ("all Conv2d = 70 %") or by module at a
chosen depth (DeepSpeed-profiler style top modules), sortable, with a bar chart of the largest
shares. Clicking a group selects its layers everywhere; selecting a layer marks its group. The sums
come from the core (``Profile.totals_by``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtWidgets import QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QSplitter, QTableView, QVBoxLayout, QWidget

from layerscope.profiler.format import fmt_bytes, fmt_count, fmt_ms, fmt_pct
from layerscope.profiler.profile import ModuleTotals

from .state import AppState
from .style import fit_columns
from .table_model import FlatTableModel, Index

TOP_BARS = 15
COLUMNS = [
    ("Group", lambda t: t.path, lambda t: t.path),
    ("Layers", lambda t: t.layers, lambda t: f"{t.layers:,}"),
    ("Latency ms", lambda t: t.latency_ms, lambda t: fmt_ms(t.latency_ms)),
    ("Share", lambda t: t.latency_share, lambda t: fmt_pct(t.latency_share)),
    ("FLOPs", lambda t: t.flops, lambda t: fmt_count(t.flops) + (f" (+{t.unknown_layers} unknown)" if t.unknown_layers else "")),
    ("Bytes moved", lambda t: t.bytes_moved, lambda t: fmt_bytes(t.bytes_moved)),
    ("Params", lambda t: t.params, lambda t: f"{t.params:,}"),
]


class TotalsModel(FlatTableModel):
    def __init__(self) -> None:
        super().__init__()
        self.totals: list[ModuleTotals] = []
        self._rows: dict[str, int] | None = None

    def set_totals(self, totals: list[ModuleTotals]) -> None:
        self.beginResetModel()
        self.totals = list(totals)
        self._rows = None
        self.endResetModel()

    def n_rows(self) -> int:
        return len(self.totals)

    def headers(self) -> list[str]:
        return [c[0] for c in COLUMNS]

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        t = self.totals[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return COLUMNS[index.column()][2](t)
        if role == Qt.ItemDataRole.UserRole:
            return t.path
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() > 0:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        key = COLUMNS[column][1]
        self.layoutAboutToBeChanged.emit()
        self.totals.sort(key=(lambda t: str(key(t)).lower()) if column == 0 else key,
                         reverse=order == Qt.SortOrder.DescendingOrder)
        self._rows = None
        self.layoutChanged.emit()

    def row_of(self, group: str) -> int:
        if self._rows is None:
            self._rows = {t.path: i for i, t in enumerate(self.totals)}
        return self._rows.get(group, -1)


class TotalsView(QWidget):
    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state
        self._syncing = False
        self.by = QComboBox()
        self.by.addItem("Op type", ("type", 1))
        for d in (1, 2, 3, 4):
            self.by.addItem(f"Module at depth {d}", ("module", d))
        self.by.currentIndexChanged.connect(lambda _i: self.refresh())
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(QLabel("Totals by:"))
        top.addWidget(self.by)
        top.addWidget(self.caption, 1)

        self.model = TotalsModel()
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSortingEnabled(True)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.verticalHeader().setVisible(False)
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.view.setAlternatingRowColors(True)
        self.view.horizontalHeader().setResizeContentsPrecision(200)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.selectionModel().selectionChanged.connect(self._on_row)

        self.chart = pg.PlotWidget(background="w")
        self.chart.setLabel("bottom", "share of latency (%)")
        self.chart.setMouseEnabled(x=False, y=False)
        self.chart.hideButtons()
        self.bars = pg.BarGraphItem(x0=[], y=[], width=[], height=0.7, brush=pg.mkBrush(106, 81, 163, 200))
        self.chart.addItem(self.bars)
        self.bar_groups: list[str] = []

        split = QSplitter()
        split.addWidget(self.view)
        split.addWidget(self.chart)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        self.chart.setMinimumWidth(160)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(split)
        state.profileChanged.connect(lambda _p: state.later(self.refresh))
        state.selectionChanged.connect(lambda _lid: state.later(lambda: self._on_selection(state.selected)))

    def mode(self) -> tuple[str, int]:
        return self.by.currentData()

    def refresh(self) -> None:
        p = self.state.profile
        key, depth = self.mode()
        totals = p.totals_by(key, depth) if p is not None else []
        self.model.set_totals(totals)
        self.view.horizontalHeader().setSortIndicator(2, Qt.SortOrder.DescendingOrder)
        fit_columns(self.view, first_max=300)
        self._chart(totals)
        if p is None:
            self.caption.setText("")
            return
        what = "op types" if key == "type" else f"modules at depth {depth} (layers above that depth stand alone)"
        top = totals[:3]
        of = " (share of FLOPs: a static profile timed nothing)" if p.static else ""
        self.caption.setText(f"{len(totals):,} {what}; largest{of}: " + ", ".join(f"{t.path} {fmt_pct(t.share(p.static))}" for t in top)
                             if top else "")
        self._on_selection(self.state.selected)

    def _chart(self, totals: list[ModuleTotals]) -> None:
        top = totals[:TOP_BARS]
        self.bar_groups = [t.path for t in top]
        n = len(top)
        y = np.arange(n)[::-1].astype(float)  # largest at the top
        static = self.state.profile is not None and self.state.profile.static
        self.chart.setLabel("bottom", "share of FLOPs (%)" if static else "share of latency (%)")
        self.bars.setOpts(x0=np.zeros(n), y=y, width=np.array([100 * t.share(static) for t in top]), height=0.7)
        ax = self.chart.getAxis("left")
        ax.setTicks([[(float(y[i]), _short(top[i].path)) for i in range(n)]])
        self.chart.getViewBox().autoRange()

    def group_of(self, layer_id: str) -> str | None:
        p = self.state.profile
        if p is None or layer_id not in p.graph:
            return None
        return p.group_of(layer_id, *self.mode())

    def select_group(self, group: str) -> None:
        """Select every layer of a group in all views (the slowest leads)."""
        p = self.state.profile
        if p is None:
            return
        self.state.select_many(p.slowest_first(list(p.groups(*self.mode()).get(group, []))))

    def _on_row(self, *_: Any) -> None:
        if self._syncing:
            return
        rows = self.view.selectionModel().selectedRows()
        if rows:
            self.select_group(self.model.data(rows[0], Qt.ItemDataRole.UserRole))

    def _on_selection(self, layer_id: str) -> None:
        group = self.group_of(layer_id) if layer_id else None
        row = self.model.row_of(group) if group else -1
        self._syncing = True
        try:
            sel = self.view.selectionModel()
            if row < 0:
                sel.clearSelection()
            else:
                sel.select(self.model.index(row, 0), QItemSelectionModel.SelectionFlag.ClearAndSelect
                           | QItemSelectionModel.SelectionFlag.Rows)
                self.view.scrollTo(self.model.index(row, 0))
        finally:
            self._syncing = False


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]
