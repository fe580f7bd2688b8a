"""Layer table: every layer, every number, sortable by every column (numeric sort on raw values).

Built for 10,000-layer models: the model sorts and filters itself on keys computed once per
column (no per-comparison Python calls through a proxy), looks rows up through an id -> row index,
and re-selects thousands of rows as a few contiguous ranges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLineEdit, QTableView, QVBoxLayout, QWidget

from layerscope.profiler import LayerRow, Profile
from layerscope.profiler.format import fmt_bytes, fmt_count, fmt_ms, fmt_pct
from layerscope.profiler.timing import within_noise

from .state import AppState
from .style import bound_color, fit_columns
from .table_model import FlatTableModel, Index

SORT_ROLE = Qt.ItemDataRole.UserRole + 1

# (header, raw value, display text)
Column = tuple[str, Callable[[LayerRow], Any], Callable[[LayerRow], str]]


def _shape(r: LayerRow) -> str:
    return " ".join("×".join(map(str, t.shape)) for t in r.layer.outputs)


# The deciding columns (time, share, bound, % of roof) come first so they fit a laptop screen.
COLUMNS: list[Column] = [
    ("Layer", lambda r: r.layer.id, lambda r: r.layer.id),
    ("Type", lambda r: r.layer.type_name, lambda r: r.layer.type_name),
    ("Latency ms", lambda r: r.timing.latency_ms if r.timing else -1,
     lambda r: (fmt_ms(r.timing.latency_ms) + (" ~" if r.noisy else "")) if r.timing else "-"),
    ("± IQR ms", lambda r: r.timing.spread_ms if r.timing else -1, lambda r: fmt_ms(r.timing.spread_ms) if r.timing else "-"),
    ("Share", lambda r: r.latency_share, lambda r: fmt_pct(r.latency_share)),
    ("Bound", lambda r: r.bound.value, lambda r: r.bound.value),
    ("% of roof", lambda r: r.point.roof_fraction if r.point and r.point.roof_fraction is not None else -1,
     lambda r: r.point.roof_text() if r.point else "-"),
    ("FLOPs", lambda r: -1 if r.metrics.flops is None else r.metrics.flops, lambda r: fmt_count(r.metrics.flops)),
    ("MACs", lambda r: -1 if r.metrics.macs is None else r.metrics.macs, lambda r: fmt_count(r.metrics.macs)),
    ("Params", lambda r: r.metrics.params, lambda r: f"{r.metrics.params:,}"),
    ("Bytes moved", lambda r: r.metrics.bytes_moved, lambda r: fmt_bytes(r.metrics.bytes_moved)),
    ("FLOP/byte", lambda r: r.metrics.arithmetic_intensity if r.metrics.arithmetic_intensity is not None else -1,
     lambda r: "-" if r.metrics.arithmetic_intensity is None else f"{r.metrics.arithmetic_intensity:.2f}"),
    ("Output shape", _shape, _shape),
    ("Activation mem", lambda r: r.timing.output_bytes if r.timing else -1, lambda r: fmt_bytes(r.timing.output_bytes) if r.timing else "-"),
]
BOUND_COLUMN = [c[0] for c in COLUMNS].index("Bound")
SHARE_COLUMN = [c[0] for c in COLUMNS].index("Share")
LATENCY_COLUMN = [c[0] for c in COLUMNS].index("Latency ms")
TEXT_COLUMNS = {0, 1, BOUND_COLUMN, len(COLUMNS) - 2}  # left-aligned


# Shown after a plan is applied: (header, raw, text) over the core's LayerDelta (None = not compressed).
def _delta_ms(d) -> float | None:
    return d.latency_change_ms if d is not None else None


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
DELTA_LATENCY = [c[0] for c in DELTA_COLUMNS].index("Δ latency ms")


def _columns_for(profile: Profile | None) -> list[Column]:
    """The columns for ``profile``: its latency column shows (and sorts by) the statistic the profile ranks by, the
    25th percentile when the machine was busy, and says so in its header."""
    if profile is None or profile.rank_statistic == "median":
        return COLUMNS
    out = list(COLUMNS)
    out[LATENCY_COLUMN] = ("Latency p25 ms (busy)", lambda r: profile.rank_ms(r) or -1.0,
                           lambda r: (fmt_ms(r.timing.p25_ms) + (" ~" if r.noisy else "")) if r.timing else "-")
    return out


class LayerTableModel(FlatTableModel):
    """Rows of the profile in a sorted, filtered order of its own (``order``: visible -> row)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[LayerRow] = []
        self.columns: list[Column] = COLUMNS  # the latency column follows the profile's rank statistic (_columns_for)
        self.deltas: dict[str, Any] | None = None  # layer id -> LayerDelta, when a plan is applied
        self.noise: set[str] = set()  # layers whose latency change lies within the measured spread
        self.index_of: dict[str, int] = {}  # layer id -> row
        self.order = np.zeros(0, dtype=np.int64)  # visible position -> row
        self.position = np.zeros(0, dtype=np.int64)  # row -> visible position, -1 when filtered out
        self.cols: list[tuple[str, int]] = []
        self.sort_key: tuple[int, Qt.SortOrder] | None = None
        self.filter_text = ""
        self._keys: dict[tuple[str, int], np.ndarray] = {}
        self._haystack: list[str] = []
        self._columns()

    # ------------------------------------------------------------------ content
    def set_profile(self, profile: Profile | None) -> None:
        self.beginResetModel()
        self.rows = profile.rows() if profile else []
        self.columns = _columns_for(profile)
        self.index_of = profile.row_index() if profile else {}
        self.deltas, self.noise = None, set()
        self._keys = {}
        self._haystack = [f"{r.layer.id} {r.layer.type_name} {r.bound.value}".lower() for r in self.rows]
        self._columns()
        self._reorder()
        self.endResetModel()

    def set_compression(self, outcome, reference: Profile | None = None) -> None:
        self.beginResetModel()
        self.deltas = {d.layer_id: d for d in outcome.layers} if outcome is not None else None
        self.noise = set()
        if self.deltas is not None and reference is not None:
            after = outcome.candidate_profile.timings
            self.noise = {lid for lid in self.deltas if within_noise(reference.timings.get(lid), after.get(lid))}
        self._keys = {k: v for k, v in self._keys.items() if k[0] == "p"}
        self._columns()
        if self.sort_key and self.sort_key[0] >= len(self.cols):
            self.sort_key = None
        self._reorder()
        self.endResetModel()

    def _columns(self) -> None:
        """Visible columns: the profile's, with the before/after columns after "Share" once a plan is applied."""
        base = [("p", k) for k in range(len(COLUMNS))]
        self.cols = base if self.deltas is None else (
            base[:SHARE_COLUMN + 1] + [("d", k) for k in range(len(DELTA_COLUMNS))] + base[SHARE_COLUMN + 1:])

    # ------------------------------------------------------------------ sort / filter
    def _key(self, column: int) -> np.ndarray:
        kind, k = self.cols[column]
        found = self._keys.get((kind, k))
        if found is None:
            if kind == "p":
                raw = self.columns[k][1]
                values = [raw(r) for r in self.rows]
            else:
                raw, deltas = DELTA_COLUMNS[k][1], self.deltas or {}
                values = [raw(deltas.get(r.layer.id)) for r in self.rows]
            if values and isinstance(values[0], str):
                ranks = {v: i for i, v in enumerate(sorted(set(values), key=str.lower))}
                found = np.array([ranks[v] for v in values], dtype=np.float64)
            else:
                found = np.array(values, dtype=np.float64)
            self._keys[(kind, k)] = found
        return found

    def _reorder(self) -> None:
        n = len(self.rows)
        order = np.arange(n)
        if self.sort_key is not None and n:
            col, direction = self.sort_key
            key = self._key(col)
            order = np.argsort(-key if direction == Qt.SortOrder.DescendingOrder else key, kind="stable")
        if self.filter_text:
            needle = self.filter_text.lower()
            hay = self._haystack
            order = order[np.fromiter((needle in hay[i] for i in order), dtype=bool, count=len(order))]
        self.order = np.asarray(order, dtype=np.int64)
        self.position = np.full(n, -1, dtype=np.int64)
        self.position[self.order] = np.arange(len(self.order))

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        if not 0 <= column < len(self.cols):
            return
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        ids = [self.layer_at(i.row()) for i in old]
        self.sort_key = (column, order)
        self._reorder()
        new = [self.index(self.row_of(lid), i.column()) for lid, i in zip(ids, old, strict=True)]
        self.changePersistentIndexList(old, new)
        self.layoutChanged.emit()

    def set_filter(self, text: str) -> None:
        self.beginResetModel()
        self.filter_text = text.strip()
        self._reorder()
        self.endResetModel()

    # ------------------------------------------------------------------ Qt model
    def n_rows(self) -> int:
        return len(self.order)

    def headers(self) -> list[str]:
        return [(self.columns if kind == "p" else DELTA_COLUMNS)[k][0] for kind, k in self.cols]

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[self.order[index.row()]]
        kind, col = self.cols[index.column()]
        if role == Qt.ItemDataRole.UserRole:
            return row.layer.id
        if kind == "p":
            subject, (_, raw, text) = row, self.columns[col]
            right_aligned = col not in TEXT_COLUMNS
        else:
            subject, (_, raw, text) = (self.deltas or {}).get(row.layer.id), DELTA_COLUMNS[col]
            right_aligned = col > 0
        if role == Qt.ItemDataRole.DisplayRole:
            if kind == "d" and col == DELTA_LATENCY and row.layer.id in self.noise and _delta_ms(subject) is not None:
                return "no change (within noise)"
            return text(subject)
        if role == SORT_ROLE:
            return raw(subject)
        if role == Qt.ItemDataRole.ForegroundRole:
            if kind == "p" and col == BOUND_COLUMN:
                return bound_color(row.bound)
            if kind == "d" and col == DELTA_LATENCY and row.layer.id not in self.noise:
                delta = _delta_ms(subject)
                if delta:
                    return QColor(0, 140, 60) if delta < 0 else QColor(190, 40, 40)
        if role == Qt.ItemDataRole.TextAlignmentRole and right_aligned:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            if index.column() == 0:
                return f"{row.layer.id}\n{row.layer.source or 'source line unknown'}"
            return text(subject)
        return None

    # ------------------------------------------------------------------ lookups
    def row_of(self, layer_id: str) -> int:
        """Visible row of a layer, -1 when it is filtered out or unknown."""
        i = self.index_of.get(layer_id)
        return -1 if i is None else int(self.position[i])

    def layer_at(self, visible_row: int) -> str:
        return self.rows[self.order[visible_row]].layer.id


class LayerTable(QWidget):
    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state
        self.model = LayerTableModel()
        self.filter = QLineEdit(placeholderText="Filter layers (id, type, bound)…")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._on_filter)
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSortingEnabled(True)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)  # Ctrl/Shift: several layers
        self._syncing = False
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setAlternatingRowColors(True)
        self.view.setWordWrap(False)
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # long module paths keep both ends
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.view.verticalHeader().setDefaultSectionSize(self.view.fontMetrics().height() + 6)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.selectionModel().selectionChanged.connect(self._on_selection)
        self.model.layoutChanged.connect(lambda *_: self._on_state_selection(self.state.selected))  # after a sort
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter)
        layout.addWidget(self.view)
        state.profileChanged.connect(lambda p: state.later(lambda: self._on_profile(p)))
        state.selectionChanged.connect(lambda _lid: state.later(lambda: self._on_state_selection(state.selected)))
        state.compressionChanged.connect(self._on_compression)

    def _on_profile(self, profile: Profile | None) -> None:
        self.model.sort_key = (LATENCY_COLUMN, Qt.SortOrder.DescendingOrder)  # slowest first, applied with the rows
        self.model.set_profile(profile)
        self.view.horizontalHeader().setSortIndicator(LATENCY_COLUMN, Qt.SortOrder.DescendingOrder)
        self.state.later(self._fit_columns)  # its own turn on a big model

    def _fit_columns(self) -> None:
        fit_columns(self.view, first_max=320)  # ids elide in the middle; the full id is in the tooltip

    def _on_filter(self, text: str) -> None:
        self.model.set_filter(text)
        self._on_state_selection(self.state.selected)

    def _on_compression(self, outcome) -> None:
        sort = self.model.sort_key
        self.model.set_compression(outcome, self.state.profile)
        if sort is not None and self.model.sort_key is not None:
            self.view.horizontalHeader().setSortIndicator(*self.model.sort_key)
        self._on_state_selection(self.state.selected)
        if outcome is not None:
            self._fit_columns()

    def _on_selection(self, *_: Any) -> None:
        if self._syncing:
            return
        sel = self.view.selectionModel()
        ranges = sel.selection()
        rows = sorted({r for k in range(ranges.count()) for r in range(ranges.at(k).top(), ranges.at(k).bottom() + 1)})
        ids = [self.model.layer_at(r) for r in rows]
        current = self.view.currentIndex()
        if current.isValid() and current.row() in set(rows):  # the clicked row leads
            lead = self.model.layer_at(current.row())
            ids = [lead] + [i for i in ids if i != lead]
        if ids:
            self.state.select_many(ids)

    def _on_state_selection(self, _layer_id: str) -> None:
        sel = self.view.selectionModel()
        positions = sorted(p for p in (self.model.row_of(lid) for lid in self.state.selected_set) if p >= 0)
        selection = QItemSelection()
        last_col = self.model.columnCount() - 1
        start = prev = -1
        for p in [*positions, -1]:  # contiguous runs become one range each
            if p >= 0 and prev >= 0 and p == prev + 1:
                prev = p
                continue
            if start >= 0:
                selection.select(self.model.index(start, 0), self.model.index(prev, last_col))
            start = prev = p
        self._syncing = True
        try:
            sel.select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)
            lead = self.model.row_of(self.state.selected) if self.state.selected else -1
            if lead >= 0:
                self.view.scrollTo(self.model.index(lead, 0))
        finally:
            self._syncing = False

    def select_layer_row(self, layer_id: str) -> None:
        """Select the table row of ``layer_id`` as a click would (used by tests and keyboard)."""
        self.view.selectRow(self.model.row_of(layer_id))
