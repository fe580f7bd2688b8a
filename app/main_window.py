"""Main window: assembles the panels and menus; no logic of its own."""

from __future__ import annotations

import sys

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QGuiApplication, QIcon, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFileDialog, QMainWindow, QMessageBox, QScrollArea, QSizePolicy
from superqt import QElidingLabel

from layerscope.profiler import LayerScopeError, Profile
from layerscope.profiler.format import fmt_bytes, fmt_count, fmt_ms, fmt_pct
from layerscope.profiler.jobs import ModelRequest

from .compiled_view import CompiledOpsView
from .compress_panel import CompressionPanel
from .controller import ProfileController
from .details import LayerDetails
from .files import save_text
from .graph_view import LayerGraphView
from .history_dialog import HistoryDialog
from .open_dialog import OpenModelDialog
from .ranges_view import RangesView
from .roofline_view import RooflineView
from .state import AppState
from .table import LayerTable
from .totals_view import TotalsView
from .tradeoff_view import TradeoffView


def app_icon() -> QIcon:
    from importlib import resources

    return QIcon(str(resources.files("layerscope.assets") / "icons" / "layerscope.svg"))


class MainWindow(QMainWindow):
    def __init__(self, state: AppState | None = None, show_dialogs: bool = True) -> None:
        super().__init__()
        # Worker threads (profiling, layout) hold the GIL for up to the switch interval each time the
        # GUI thread asks for it, and one Qt event re-enters Python many times: at the default 5 ms a
        # progress-bar repaint took 50 ms. 1 ms keeps the GUI responsive for a few % of worker speed.
        sys.setswitchinterval(0.001)
        self.state = state or AppState()
        self.setWindowTitle("LayerScope")
        self.setWindowIcon(app_icon())
        screen = QGuiApplication.primaryScreen()
        avail = screen.availableGeometry() if screen is not None else None
        # fit the screen (1366×768 laptops included), up to 1800×1000
        self.resize(min(1800, avail.width() if avail else 1500), min(1000, avail.height() if avail else 950))
        self.controller = ProfileController(self.state, self, show_dialogs=show_dialogs)
        self.show_dialogs = show_dialogs
        self.last_error = ""  # the last error a dialog showed (or would have, without dialogs)

        self.graph = LayerGraphView(self.state)
        self.table = LayerTable(self.state)
        self.roofline = RooflineView(self.state)
        self.details = LayerDetails(self.state)
        self.compiled = CompiledOpsView(self.state, self.controller)
        self.setCentralWidget(self.graph)
        self.totals_view = TotalsView(self.state)
        self.ranges = RangesView(self.state)
        self.tradeoffs = TradeoffView(self.state, self.controller)
        self._arrange_docks()
        self._fit_docks()
        self.totals = QElidingLabel("Open a model (File → Open model…)")
        self.totals.setElideMode(Qt.TextElideMode.ElideRight)
        self.totals.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # never widens the window
        self.statusBar().addWidget(self.totals, 1)
        self._menus()
        self.state.profileChanged.connect(self._on_profile)
        self.state.compressionChanged.connect(lambda _o: self._on_profile(self.state.profile))
        self.controller.sweepOpened.connect(self._show_tradeoffs)
        self.controller.stopped.connect(lambda secs: self.statusBar().showMessage(
            f"Cancelled: the work stopped {secs:.2f} s after Cancel; the previous results are kept.", 10000))

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not getattr(self, "_fitted", False):  # sizes apply once the window has its real size
            self._fitted = True
            self._fit_docks()

    def _fit_docks(self) -> None:
        """Split the window between graph, tables and the right column by its size."""
        layers, totals, roofline, compress = self._docks
        w, h = self.width(), self.height()
        self.resizeDocks([roofline], [int(w * (0.38 if w < 1600 else 0.32))], Qt.Orientation.Horizontal)
        if totals not in self.tabifiedDockWidgets(layers):
            self.resizeDocks([layers, totals], [int(w * 0.38), int(w * 0.30)], Qt.Orientation.Horizontal)
        self.resizeDocks([layers], [int(h * 0.42)], Qt.Orientation.Vertical)
        self.resizeDocks([roofline, compress], [int(h * 0.5), int(h * 0.5)], Qt.Orientation.Vertical)

    def _dock(self, title: str, widget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _arrange_docks(self) -> None:
        """The tables under the graph (side by side on a wide screen, tabbed on a laptop's), the roofline and
        the compression panel in the right column."""
        # every dock can be dragged, floated or closed (View menu)
        layers_dock = self._dock("Layers", self.table, Qt.DockWidgetArea.BottomDockWidgetArea)
        totals_dock = self._dock("Totals", self.totals_view, Qt.DockWidgetArea.BottomDockWidgetArea)
        ranges_dock = self._dock("Activation ranges", self.ranges, Qt.DockWidgetArea.BottomDockWidgetArea)
        compiled_dock = self._dock("Compiled ops (ONNX Runtime)", self.compiled, Qt.DockWidgetArea.BottomDockWidgetArea)
        tradeoff_dock = self._dock("Trade-offs", self.tradeoffs, Qt.DockWidgetArea.BottomDockWidgetArea)
        if self.width() >= 1600:  # room for two tables: layers (and ranges) beside totals (and compiled ops)
            self.splitDockWidget(layers_dock, totals_dock, Qt.Orientation.Horizontal)
            self.tabifyDockWidget(layers_dock, ranges_dock)
            self.tabifyDockWidget(totals_dock, compiled_dock)
            self.tabifyDockWidget(totals_dock, tradeoff_dock)
        else:  # a laptop screen: one tab group; View → "Compiled ops beside layers" splits it
            for d in (totals_dock, ranges_dock, compiled_dock, tradeoff_dock):
                self.tabifyDockWidget(layers_dock, d)
        self.ranges_dock, self.compiled_dock, self.totals_dock, self.layers_dock = ranges_dock, compiled_dock, totals_dock, layers_dock
        self.tradeoff_dock = tradeoff_dock
        totals_dock.raise_()
        layers_dock.raise_()
        # the right column (roofline, compress/details) runs the full height; the tables sit under the graph
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        roofline_dock = self._dock("Roofline", self.roofline, Qt.DockWidgetArea.RightDockWidgetArea)
        details_dock = self._dock("Layer details", self.details, Qt.DockWidgetArea.RightDockWidgetArea)
        self.compression = CompressionPanel(self.state, self.controller)
        scroll = QScrollArea()
        scroll.setWidget(self.compression)
        scroll.setWidgetResizable(True)
        compress_dock = self._dock("Compress", scroll, Qt.DockWidgetArea.RightDockWidgetArea)
        self.tabifyDockWidget(details_dock, compress_dock)
        compress_dock.raise_()
        self._docks = (layers_dock, totals_dock, roofline_dock, compress_dock)

    def _show_tradeoffs(self, _sweep: object) -> None:
        self.tradeoff_dock.show()
        self.tradeoff_dock.raise_()

    def _menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        for text, shortcut, slot in [
            ("&Open model…", QKeySequence.StandardKey.Open, self.open_model),
            ("Open &profile JSON…", None, self.open_profile),
            ("Open ONNX &file…", None, self.open_onnx_file),
            ("&Save profile JSON…", QKeySequence.StandardKey.Save, self.save_profile),
            ("Export &CSV…", None, self.export_csv),
            (None, None, None),
            ("&History… (runs, notes, sweeps)", None, lambda: self.show_history(self.controller.history)),
            (None, None, None),
            ("&Quit", QKeySequence.StandardKey.Quit, self.close),
        ]:
            if text is None:
                file_menu.addSeparator()
                continue
            act = QAction(text, self)
            if shortcut is not None:
                act.setShortcut(shortcut)
            act.triggered.connect(slot)
            file_menu.addAction(act)
        view = self.menuBar().addMenu("&View")
        for dock in self.findChildren(QDockWidget):
            view.addAction(dock.toggleViewAction())
        view.addSeparator()
        beside = QAction("Compiled ops beside layers", self)
        beside.triggered.connect(self.compiled_beside_layers)
        view.addAction(beside)

    def show_history(self, history: str | None = None) -> HistoryDialog:
        dialog = HistoryDialog(self, self.controller.open_run, history)
        if self.show_dialogs:
            dialog.open()
        return dialog

    def compiled_beside_layers(self) -> None:
        """Put the compiled-ops table to the right of the layer table, both visible."""
        self.splitDockWidget(self.layers_dock, self.compiled_dock, Qt.Orientation.Horizontal)
        self.compiled_dock.show()
        self.layers_dock.raise_()
        self.compiled_dock.raise_()
        central = self.centralWidget()
        w = central.width() if central is not None else self.width()
        self.resizeDocks([self.layers_dock, self.compiled_dock], [w // 2, w // 2], Qt.Orientation.Horizontal)

    # ------------------------------------------------------------------ actions
    def profile(self, req: ModelRequest) -> None:
        self.controller.start(req)

    def open_model(self) -> None:
        dlg = OpenModelDialog(self, self.controller.last_request)
        if dlg.exec():
            self.profile(dlg.request())

    def open_onnx_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open ONNX model", "", "ONNX (*.onnx)")
        if path:
            self.compiled_dock.raise_()
            self.controller.map_onnx(self.compiled.level.currentText(), onnx_path=path)

    def open_profile(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open profile", "", "LayerScope profile (*.json)")
        if path:
            self.controller.open_profile(path)  # read and checked in the worker: big profiles are big JSON

    def load_profile(self, path: str) -> bool:
        """Open a saved profile; a bad file opens one dialog and keeps the current profile."""
        try:
            profile = Profile.load(path)
        except LayerScopeError as exc:
            self.last_error = str(exc)
            if self.show_dialogs:
                QMessageBox.critical(self, "Could not open the profile", str(exc))
            self.statusBar().showMessage(f"Could not open {path}; the current profile is kept.", 8000)
            return False
        self.state.set_profile(profile)
        return True

    def save_profile(self) -> None:
        if self.state.profile is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save profile", f"{self.state.profile.model.name}.json", "JSON (*.json)")
        if path:
            save_text(self, path, self.state.profile.to_json(), "profile", self.show_dialogs)

    def export_csv(self) -> None:
        if self.state.profile is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export CSV", f"{self.state.profile.model.name}.csv", "CSV (*.csv)")
        if path:
            save_text(self, path, self.state.profile.to_csv(), "CSV", self.show_dialogs)

    def _on_profile(self, p: Profile | None) -> None:
        if p is None:
            self.totals.setText("")
            return
        s, m = p.summary, p.model
        self.setWindowTitle(f"LayerScope — {m.name}")
        timed = ("static profile (nothing timed)" if p.static else
                 f"end-to-end {fmt_ms(s.end_to_end_ms)} ms (per-layer sum {fmt_pct(s.fidelity)})")
        text = (f"{m.name} · {len(p.graph):,} layers via {m.capture_method.value} · {timed} · {m.total_params:,} params · "
                f"{fmt_count(p.total_macs)} MACs · {'memory needed' if p.static else 'peak memory'} {fmt_bytes(s.peak_memory_bytes)} · "
                f"roof: {p.hardware.name}"
                + (f" · ⚠ {len(m.capture_notes)} note(s): {'; '.join(m.capture_notes)}" if m.capture_notes else "")
                + "".join(f" · ⚠ {w}" for w in (*s.warnings, *filter(None, [p.roof_warning()])))
                + self._compression_totals())
        self.totals.setText(text)
        self.totals.setToolTip(text.replace(" · ", "\n"))

    def _compression_totals(self) -> str:
        res = self.state.compression
        if res is None:
            return ""
        return (f" · compressed: size {res.size_ratio:.2f}×, latency {res.latency_ratio:.2f}× ({res.latency.verdict})"
                f"{' (simulated)' if res.simulated else ''}, output SQNR {res.output.sqnr_db:.1f} dB")
