"""The layer graph's toolbar: depth, Expand all, colour mode, search (with completion over layer and module
names), Fit selection / Fit all, and the info line. The graph view connects it."""

from __future__ import annotations

from PySide6.QtCore import QStringListModel, Qt
from PySide6.QtWidgets import QComboBox, QCompleter, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSizePolicy, QWidget
from superqt import QElidingLabel


class GraphToolbar(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.depth_box = QComboBox()
        self.depth_box.addItem("All layers", None)
        for d in (1, 2, 3):
            self.depth_box.addItem(f"Modules to depth {d}", d)
        self.color_box = QComboBox()
        self.color_box.addItems(["Bound (shade = time)", "Latency heat"])
        self.color_box.setToolTip("Bound: blue memory-bound, orange compute-bound, darker = slower.\n"
                                  "Latency heat: pale = fast, dark red = slowest (reads best zoomed out).")
        self.expand = QPushButton("Expand all")
        self.fit_all = QPushButton("Fit all")
        self.fit_sel = QPushButton("Fit selection")
        self.search = QLineEdit(placeholderText="Find layer or module…")
        self.search.setClearButtonEnabled(True)
        self.search.setMaximumWidth(260)
        self.names = QStringListModel()  # every layer id and module path, for completion
        self.completer = QCompleter(self.names, self)
        self.completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setMaxVisibleItems(15)
        self.search.setCompleter(self.completer)
        self.info = QElidingLabel()
        self.info.setMinimumWidth(10)
        self.info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        bar = QHBoxLayout(self)
        bar.setContentsMargins(0, 0, 0, 0)
        for w in (QLabel("Show:"), self.depth_box, self.expand, self.color_box, self.search, self.fit_sel, self.fit_all):
            bar.addWidget(w)
        bar.addWidget(self.info, 1)
