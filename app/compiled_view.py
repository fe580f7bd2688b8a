"""Compiled ops: ONNX Runtime's ops with time, share and the source layers each came from.

Selecting an op selects all its source layers in the table, graph and roofline; selecting a layer
highlights its compiled ops. Below, per-layer latency side by side: PyTorch eager vs ORT."""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QSortFilterProxyModel, Qt
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QComboBox, QHBoxLayout, QLabel, QPushButton, QSplitter, QTableView, QVBoxLayout, QWidget

from layerscope.profiler.format import fmt_ms, fmt_pct

from .state import AppState

SORT_ROLE = Qt.ItemDataRole.UserRole + 1


def _item(text: str, sort: Any = None, key: str | None = None) -> QStandardItem:
    it = QStandardItem(text)
    it.setEditable(False)
    it.setData(sort if sort is not None else text, SORT_ROLE)
    if key is not None:
        it.setData(key, Qt.ItemDataRole.UserRole)
    return it


class CompiledOpsView(QWidget):
    def __init__(self, state: AppState, controller) -> None:
        super().__init__()
        self.state = state
        self.controller = controller
        self._syncing = False
        self.level = QComboBox()
        self.level.addItems(["all", "extended", "basic", "disabled"])
        self.run_btn = QPushButton("Map to ONNX Runtime")
        self.run_btn.setToolTip("Export the current model to ONNX, profile it in ONNX Runtime at this optimisation "
                                "level and map every compiled op back to its source layers")
        self.run_btn.clicked.connect(lambda: controller.map_onnx(self.level.currentText()))
        self.summary = QLabel("No ONNX Runtime profile yet.")
        self.summary.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(QLabel("ORT opt level:"))
        top.addWidget(self.level)
        top.addWidget(self.run_btn)
        top.addStretch(1)

        self.ops_model = QStandardItemModel(0, 7)
        self.ops_model.setHorizontalHeaderLabels(["ORT op", "Op type", "ms", "Share", "Source layers", "Match", "Source line"])
        self.ops = self._table(self.ops_model)
        self.ops.selectionModel().selectionChanged.connect(self._on_op_selected)
        self.layer_ops = QLabel()
        self.layer_ops.setWordWrap(True)
        self.cmp_model = QStandardItemModel(0, 4)
        self.cmp_model.setHorizontalHeaderLabels(["Layer", "Eager ms", "ORT ms*", "ORT / eager", "Fused with"])
        self.cmp = self._table(self.cmp_model)
        self.cmp.selectionModel().selectionChanged.connect(self._on_cmp_selected)

        split = QSplitter(Qt.Orientation.Vertical)
        upper = QWidget()
        ul = QVBoxLayout(upper)
        ul.setContentsMargins(0, 0, 0, 0)
        ul.addWidget(self.ops)
        ul.addWidget(self.layer_ops)
        split.addWidget(upper)
        split.addWidget(self.cmp)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(split)
        state.onnxChanged.connect(self._on_onnx)
        state.selectionChanged.connect(self._on_layer_selected)
        state.busyChanged.connect(lambda busy: self.run_btn.setEnabled(not busy))

    @staticmethod
    def _table(model: QStandardItemModel) -> QTableView:
        proxy = QSortFilterProxyModel()
        proxy.setSourceModel(model)
        proxy.setSortRole(SORT_ROLE)
        view = QTableView()
        view.setModel(proxy)
        view.setSortingEnabled(True)
        view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        view.verticalHeader().setVisible(False)
        view.setAlternatingRowColors(True)
        return view

    # ------------------------------------------------------------------ filling
    def _on_onnx(self, onnx) -> None:
        self.ops_model.removeRows(0, self.ops_model.rowCount())
        self.cmp_model.removeRows(0, self.cmp_model.rowCount())
        self.layer_ops.setText("")
        if onnx is None:
            self.summary.setText("No ONNX Runtime profile yet." if self.state.profile else "Profile a model first.")
            return
        total = onnx.total_op_ms or 1.0
        for o in onnx.ops:
            target = ", ".join(o.layer_ids) if o.layer_ids else ", ".join(o.onnx_nodes)
            self.ops_model.appendRow([
                _item(o.name, key=o.name), _item(o.op_type), _item(fmt_ms(o.latency_ms), o.latency_ms),
                _item(fmt_pct(o.latency_ms / total), o.latency_ms), _item(target or "-"),
                _item(o.how.value + (" (fused)" if o.fused else "")), _item("; ".join(o.source_lines) or "-"),
            ])
        self.ops.sortByColumn(2, Qt.SortOrder.DescendingOrder)
        self.ops.resizeColumnsToContents()
        target = "source layers" if onnx.has_source else "ONNX nodes (no PyTorch source)"
        self.summary.setText(
            f"<b>{onnx.model_name}</b>: {onnx.exporter.value} → ORT {onnx.ort_version}, level <b>{onnx.opt_level.value}</b>, "
            f"{onnx.provider}. {len(onnx.ops)} compiled ops, {fmt_pct(onnx.coverage_ops)} of ops and "
            f"{fmt_pct(onnx.coverage_time)} of op time mapped to {target}. ORT end-to-end {fmt_ms(onnx.end_to_end_ms)} ms"
            + (f" vs PyTorch eager {fmt_ms(self.state.profile.summary.end_to_end_ms)} ms." if self.state.profile and onnx.has_source else ".")
            + (f" Unmapped: {', '.join(onnx.unmapped)}" if onnx.unmapped else "")
        )
        p = self.state.profile
        if p is not None and onnx.has_source:
            eager_ms = {lid: t.latency_ms for lid, t in p.timings.items()}
            for lid, (ort, ratio) in onnx.ort_vs_eager(p.graph.ids(), eager_ms).items():
                eager = eager_ms.get(lid, 0.0)
                partners = sorted({x for o in onnx.ops_for_layer(lid) for x in o.layer_ids if x != lid})
                self.cmp_model.appendRow([
                    _item(lid, key=lid), _item(fmt_ms(eager), eager),
                    _item("-" if ort is None else fmt_ms(ort), -1 if ort is None else ort),
                    _item("-" if ratio is None else f"{ratio:.2f}×", -1 if ratio is None else ratio),
                    _item(", ".join(partners) or "-"),
                ])
            self.cmp_model.setHeaderData(2, Qt.Orientation.Horizontal,
                                         "ORT ms* (a fused op's time is split by the layers' eager shares)", Qt.ItemDataRole.ToolTipRole)
            self.cmp.sortByColumn(1, Qt.SortOrder.DescendingOrder)
            self.cmp.resizeColumnsToContents()

    # ------------------------------------------------------------------ selection
    def _op_by_name(self, name: str):
        onnx = self.state.onnx
        return next((o for o in onnx.ops if o.name == name), None) if onnx else None

    def _on_op_selected(self, *_: Any) -> None:
        if self._syncing:
            return
        rows = self.ops.selectionModel().selectedRows()
        if not rows:
            return
        op = self._op_by_name(self.ops.model().data(rows[0], Qt.ItemDataRole.UserRole))
        if op is not None and op.layer_ids:
            self.state.select_many(op.layer_ids)

    def select_op(self, name: str) -> None:
        """Select an op's row as a click would."""
        proxy = self.ops.model()
        for r in range(proxy.rowCount()):
            if proxy.data(proxy.index(r, 0), Qt.ItemDataRole.UserRole) == name:
                self.ops.selectRow(r)
                return

    def _on_cmp_selected(self, *_: Any) -> None:
        if self._syncing:
            return
        rows = self.cmp.selectionModel().selectedRows()
        if rows:
            self.state.select(self.cmp.model().data(rows[0], Qt.ItemDataRole.UserRole))

    def ops_for_selected_layer(self) -> list[str]:
        onnx = self.state.onnx
        return [o.name for o in onnx.ops_for_layer(self.state.selected)] if onnx and self.state.selected else []

    def _on_layer_selected(self, layer_id: str) -> None:
        names = set(self.ops_for_selected_layer())
        lid = html.escape(layer_id or "")  # a layer's name is text, never markup
        self.layer_ops.setText(f"<b>{lid}</b> runs in ORT as: {html.escape(', '.join(sorted(names)))}" if names
                               else (f"<b>{lid}</b>: no compiled op (folded away or not mapped)" if layer_id and self.state.onnx else ""))
        sel = self.ops.selectionModel()
        proxy = self.ops.model()
        self._syncing = True
        try:
            if self.state.selected_set and len(self.state.selected_set) > 1:
                return  # the selection came from an op: keep that op selected
            sel.clearSelection()
            for r in range(proxy.rowCount()):
                if proxy.data(proxy.index(r, 0), Qt.ItemDataRole.UserRole) in names:
                    sel.select(proxy.index(r, 0), QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)
        finally:
            self._syncing = False
