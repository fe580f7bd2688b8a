"""File → History…: every recorded profile, compress and sweep run, latest first, with its note
(editable: Save notes). Open shows a sweep in the trade-off view (with its reference profile in
every view) or a profile run's profile."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractItemView, QDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout

from layerscope.profiler import LayerScopeError
from layerscope.profiler.history.store import HistoryStore

COLUMNS = ("id", "when (UTC)", "kind", "status", "model", "summary", "note")
NOTE = COLUMNS.index("note")


class HistoryDialog(QDialog):
    def __init__(self, parent, on_open, history: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("History")
        self.resize(1100, 520)
        self.on_open = on_open
        self.history = history
        self.store: HistoryStore | None = None
        self.runs: list = []
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("model (spec, hash or part of it)")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(COLUMNS.index("summary"), QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        self.where = QLabel()
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_btn = QPushButton("Open")
        self.save_btn = QPushButton("Save notes")
        close = QPushButton("Close")
        top = QHBoxLayout()
        top.addWidget(QLabel("Model"))
        top.addWidget(self.filter, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.where, 1)
        for b in (self.open_btn, self.save_btn, close):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        self.filter.returnPressed.connect(self.refresh)
        self.open_btn.clicked.connect(self.open_selected)
        self.save_btn.clicked.connect(self.save_notes)
        close.clicked.connect(self.reject)
        self.table.itemSelectionChanged.connect(self._on_select)
        self.table.cellDoubleClicked.connect(self._on_double_click)
        self.refresh()

    def refresh(self) -> None:
        try:
            self.store = self.store or HistoryStore(self.history)
            self.runs = self.store.runs(self.filter.text().strip() or None, limit=500)
        except LayerScopeError as exc:  # a damaged or locked database: say so, keep the dialog usable
            self.where.setText(f"<span style='color:#b22'>{exc}</span>")
            self.runs = []
        else:
            self.where.setText(f"{len(self.runs)} run(s) in {self.store.where}")
        self.table.setRowCount(len(self.runs))
        for row, r in enumerate(self.runs):
            values = (str(r.id), r.created.replace("T", " ")[:19], r.kind, r.status, r.model, r.summary(), r.note)
            for col, text in enumerate(values):
                item = QTableWidgetItem(text)
                if col != NOTE:
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                item.setToolTip(text)
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        self._on_select()

    def _selected(self):
        rows = self.table.selectionModel().selectedRows()
        return self.runs[rows[0].row()] if rows else None

    def _on_select(self) -> None:
        r = self._selected()
        ok = r is not None and (r.kind == "sweep" or r.has_profile)
        self.open_btn.setEnabled(ok)
        self.open_btn.setToolTip("" if ok or r is None else "a compress run stores its plan and numbers, not a profile")

    def select_run(self, run_id: int) -> None:
        for row, r in enumerate(self.runs):
            if r.id == run_id:
                self.table.selectRow(row)

    def _on_double_click(self, _row: int, col: int) -> None:
        if col != NOTE:  # a double click on the note edits it
            self.open_selected()

    def open_selected(self) -> None:
        r = self._selected()
        if r is not None and (r.kind == "sweep" or r.has_profile):
            self.on_open(r.id, self.history)
            self.accept()

    def save_notes(self) -> None:
        if self.store is None:
            return
        changed = 0
        try:
            for row, r in enumerate(self.runs):
                item = self.table.item(row, NOTE)
                text = item.text() if item is not None else r.note
                if text != r.note:
                    self.store.set_note(r.id, text)
                    changed += 1
        except LayerScopeError as exc:
            self.where.setText(f"<span style='color:#b22'>{exc}</span>")
            return
        self.refresh()
        self.where.setText(f"{changed} note(s) saved in {self.store.where}")
