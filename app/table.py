"""Layer table: every layer, every number, sortable by every column (numeric sort on raw values)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QItemSelectionModel, QModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLineEdit, QTableView, QVBoxLayout, QWidget

from layerscope.profiler import LayerRow, Profile
from layerscope.profiler.format import fmt_bytes, fmt_count, fmt_ms, fmt_pct

from .state import AppState
from .style import bound_color

SORT_ROLE = Qt.ItemDataRole.UserRole + 1

# (header, raw value, display text)
Column = tuple[str, Callable[[LayerRow], Any], Callable[[LayerRow], str]]


def _shape(r: LayerRow) -> str:
    return " ".join("×".join(map(str, t.shape)) for t in r.layer.outputs)


COLUMNS: list[Column] = [
    ("Layer", lambda r: r.layer.id, lambda r: r.layer.id),
    ("Type", lambda r: r.layer.type_name, lambda r: r.layer.type_name),
    ("Latency ms", lambda r: r.timing.latency_ms if r.timing else -1, lambda r: fmt_ms(r.timing.latency_ms) if r.timing else "-"),
    ("± IQR ms", lambda r: r.timing.spread_ms if r.timing else -1, lambda r: fmt_ms(r.timing.spread_ms) if r.timing else "-"),
    ("Share", lambda r: r.latency_share, lambda r: fmt_pct(r.latency_share)),
    ("FLOPs", lambda r: -1 if r.metrics.flops is None else r.metrics.flops, lambda r: fmt_count(r.metrics.flops)),
    ("MACs", lambda r: -1 if r.metrics.macs is None else r.metrics.macs, lambda r: fmt_count(r.metrics.macs)),
    ("Params", lambda r: r.metrics.params, lambda r: f"{r.metrics.params:,}"),
    ("Bytes moved", lambda r: r.metrics.bytes_moved, lambda r: fmt_bytes(r.metrics.bytes_moved)),
    ("FLOP/byte", lambda r: r.metrics.arithmetic_intensity if r.metrics.arithmetic_intensity is not None else -1,
     lambda r: "-" if r.metrics.arithmetic_intensity is None else f"{r.metrics.arithmetic_intensity:.2f}"),
    ("Bound", lambda r: r.bound.value, lambda r: r.bound.value),
    ("% of roof", lambda r: r.point.roof_fraction if r.point and r.point.roof_fraction is not None else -1,
     lambda r: fmt_pct(r.point.roof_fraction) if r.point else "-"),
    ("Output shape", _shape, _shape),
    ("Activation mem", lambda r: r.timing.output_bytes if r.timing else -1, lambda r: fmt_bytes(r.timing.output_bytes) if r.timing else "-"),
]
BOUND_COLUMN = [c[0] for c in COLUMNS].index("Bound")
SHARE_COLUMN = [c[0] for c in COLUMNS].index("Share")


# Shown after a plan is applied: (header, raw, text) over the core's LayerDelta (None = not compressed).
def _delta_ms(d) -> float | None:
    return None if d is None or d.latency_ms_after is None else d.latency_ms_after - d.latency_ms_before


DELTA_COLUMNS = [
    ("Compression", lambda d: d.technique if d else "", lambda d: d.technique if d else ""),
    ("Latency after", lambda d: d.latency_ms_after if d and d.latency_ms_after is not None else -1,
     lambda d: fmt_ms(d.latency_ms_after) if d and d.latency_ms_after is not None else "-"),
    ("Δ latency ms", lambda d: _delta_ms(d) if _delta_ms(d) is not None else 0.0,
     lambda d: "-" if _delta_ms(d) is None else f"{_delta_ms(d):+.3f}"),
    ("FLOPs after", lambda d: d.flops_after if d and d.flops_after is not None else -1,
     lambda d: fmt_count(d.flops_after) if d else "-"),
    ("Weights before", lambda d: d.weight_bytes_before if d else -1, lambda d: fmt_bytes(d.weight_bytes_before) if d else "-"),
    ("Weights after", lambda d: d.weight_bytes_after if d else -1, lambda d: fmt_bytes(d.weight_bytes_after) if d else "-"),
]


class LayerTableModel(QAbstractTableModel):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[LayerRow] = []
        self.deltas: dict[str, Any] | None = None  # layer id -> LayerDelta, when a plan is applied

    def set_profile(self, profile: Profile | None) -> None:
        self.beginResetModel()
        self.rows = profile.rows() if profile else []
        self.deltas = None
        self.endResetModel()

    def set_compression(self, outcome) -> None:
        self.beginResetModel()
        self.deltas = {d.layer_id: d for d in outcome.report.layers} if outcome is not None else None
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._order())

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            kind, k = self._order()[section]
            return (COLUMNS if kind == "p" else DELTA_COLUMNS)[k][0]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        kind, col = self._order()[index.column()]
        if kind == "p":
            subject, (name, raw, text) = row, COLUMNS[col]
            right_aligned = col >= 2 and col != BOUND_COLUMN
        else:
            subject, (name, raw, text) = (self.deltas or {}).get(row.layer.id), DELTA_COLUMNS[col]
            right_aligned = col > 0
        if role == Qt.ItemDataRole.DisplayRole:
            return text(subject)
        if role == SORT_ROLE:
            return raw(subject)
        if role == Qt.ItemDataRole.UserRole:
            return row.layer.id
        if role == Qt.ItemDataRole.ForegroundRole:
            if kind == "p" and col == BOUND_COLUMN:
                return bound_color(row.bound)
            delta = _delta_ms(subject) if name == "Δ latency ms" else None
            if delta:
                return QColor(0, 140, 60) if delta < 0 else QColor(190, 40, 40)
        if role == Qt.ItemDataRole.TextAlignmentRole and right_aligned:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and index.column() == 0:
            return str(row.layer.source or "")
        return None

    def _order(self) -> list[tuple[str, int]]:
        """Visible columns: the profile's, with the before/after columns after "Share" once a plan is applied."""
        base = [("p", k) for k in range(len(COLUMNS))]
        if self.deltas is None:
            return base
        return base[:SHARE_COLUMN + 1] + [("d", k) for k in range(len(DELTA_COLUMNS))] + base[SHARE_COLUMN + 1:]

    def row_of(self, layer_id: str) -> int:
        return next((i for i, r in enumerate(self.rows) if r.layer.id == layer_id), -1)


class LayerTable(QWidget):
    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state
        self.model = LayerTableModel()
        self.proxy = QSortFilterProxyModel()
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.filter = QLineEdit(placeholderText="Filter layers (id, type, bound)…")
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)  # Ctrl/Shift: several layers
        self._syncing = False
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setAlternatingRowColors(True)
        self.view.verticalHeader().setVisible(False)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.selectionModel().selectionChanged.connect(self._on_selection)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter)
        layout.addWidget(self.view)
        state.profileChanged.connect(self._on_profile)
        state.selectionChanged.connect(self._on_state_selection)
        state.compressionChanged.connect(self._on_compression)

    def _on_profile(self, profile: Profile | None) -> None:
        self.model.set_profile(profile)
        self.view.sortByColumn(2, Qt.SortOrder.DescendingOrder)  # slowest first
        self.view.resizeColumnsToContents()

    def _on_compression(self, outcome) -> None:
        self.model.set_compression(outcome)
        self._on_state_selection(self.state.selected)
        if outcome is not None:
            self.view.resizeColumnsToContents()

    def _on_selection(self, *_: Any) -> None:
        if self._syncing:
            return
        idx = self.view.selectionModel().selectedRows()
        current = self.view.currentIndex()
        ids = [self.proxy.data(i, Qt.ItemDataRole.UserRole) for i in idx]
        if current.isValid() and current.row() in [i.row() for i in idx]:  # the clicked row leads
            lead = self.proxy.data(current.siblingAtColumn(0), Qt.ItemDataRole.UserRole)
            ids = [lead] + [i for i in ids if i != lead]
        if ids:
            self.state.select_many(ids)

    def _on_state_selection(self, _layer_id: str) -> None:
        sel = self.view.selectionModel()
        self._syncing = True
        try:
            sel.clearSelection()
            first = None
            for lid in self.state.selected_set:
                row = self.model.row_of(lid)
                if row < 0:
                    continue
                idx = self.proxy.mapFromSource(self.model.index(row, 0))
                if idx.isValid():
                    sel.select(idx, QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)
                    first = first or idx
            if first is not None:
                self.view.scrollTo(first)
        finally:
            self._syncing = False

    def select_layer_row(self, layer_id: str) -> None:
        """Select the table row of ``layer_id`` as a click would (used by tests and keyboard)."""
        proxy_index = self.proxy.mapFromSource(self.model.index(self.model.row_of(layer_id), 0))
        self.view.selectRow(proxy_index.row())
