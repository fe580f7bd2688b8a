"""Layer graph: a top-to-bottom DAG of layers, coloured by bound class (or by latency heat) and sized
by latency share. Modules can be collapsed to one node (depth selector; double-click a module to
expand it, double-click a layer to collapse its parent). Pan/zoom come from pyqtgraph's ViewBox.

Built for 10,000-layer models: the collapsed graph and its layout are computed off the GUI thread
(``LayerGraph.view``, cached in the core), spots are drawn from arrays with a handful of shared
brushes, and labels follow the view (level of detail): the slowest nodes in view get a label first,
so a zoomed-out graph still shows its hot spots by name. A search box finds and centres a layer or
module."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QVBoxLayout, QWidget
from superqt.utils import create_worker

from layerscope.profiler import Profile

from .graph_drawing import Drawing, choose_labels, drawing, find_name, frame, node_label, node_tip, start_range
from .graph_toolbar import GraphToolbar
from .state import BIG_MODEL_LAYERS, AppState
from .style import SELECTED_COLOR, shaded_brushes

MAX_LABELS = 60  # labels drawn at once: the slowest nodes in view
LEVELS = 8  # shades/sizes by latency share: a few shared brushes instead of one per node


class LayerGraphView(QWidget):
    laidOut = Signal()  # a new layout is on screen (tests and the benchmark wait on it)

    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state
        self.expanded: set[str] = set()  # modules opened although below the depth
        self.collapsed: set[str] = set()  # modules closed by the user
        self.module_depth: int | None = None  # None: all layers
        self.nodes: list[str] = []  # visible node ids, index = spot data
        self.node_index: dict[str, int] = {}
        self.mapping: dict[str, str] = {}  # layer id -> visible node id
        self.node_pos: dict[str, tuple[float, float]] = {}
        self.xy = np.zeros((0, 2))
        self.share = np.zeros(0)
        self.left = np.zeros(0, dtype=bool)  # per node: label goes left of the dot (leftmost of its rank)
        self.pending = False  # a layout is being computed
        self._painting = False  # edges, labels still to come
        self._filling = False  # brushes still to be applied
        self._kinds: list[Any] = []
        self._has_modules = False
        self._generation = 0
        self._worker: Any = None
        self._reset_next = False

        bar = GraphToolbar(self)
        self.depth_box, self.color_box, self.search, self.info, self._names = bar.depth_box, bar.color_box, bar.search, bar.info, bar.names
        self.depth_box.currentIndexChanged.connect(self._on_depth)
        self.color_box.currentIndexChanged.connect(lambda _i: self._paint(positions=False))
        bar.expand.clicked.connect(self.expand_all)
        bar.fit_all.clicked.connect(self.fit_all)
        bar.fit_sel.clicked.connect(self.fit_selection)
        self.search.returnPressed.connect(lambda: self.find_layer(self.search.text()))
        bar.completer.activated.connect(self.find_layer)

        self.plot = pg.PlotWidget(background="w")
        self.plot.hideAxis("bottom")
        self.plot.hideAxis("left")
        self.plot.setAspectLocked(False)
        self.plot.getViewBox().invertY(False)
        self.edges = pg.PlotCurveItem(pen=pg.mkPen((160, 160, 160), width=1))
        self.scatter = pg.ScatterPlotItem(pxMode=True, hoverable=True, tip=self._tip)
        self.selected = pg.ScatterPlotItem(pxMode=True, size=26, brush=None, pen=pg.mkPen(SELECTED_COLOR, width=3))
        self.plot.addItem(self.edges)
        self.plot.addItem(self.scatter)
        self.plot.addItem(self.selected)
        self.labels: list[pg.TextItem] = []  # a fixed pool, re-pointed as the view moves
        self.labelled: list[str] = []  # node of each visible label
        self.scatter.sigClicked.connect(self._on_click)
        self.plot.scene().sigMouseClicked.connect(self._on_scene_click)
        self._label_timer = QTimer(self, singleShot=True, interval=40)
        self._label_timer.timeout.connect(self._update_labels)
        self.plot.getViewBox().sigRangeChanged.connect(lambda *_: self._label_timer.start())

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(bar)
        layout.addWidget(self.plot)
        state.profileChanged.connect(self._on_profile)
        state.selectionChanged.connect(lambda lid: state.later(lambda: self._on_selection(state.selected)))

    # -------------------------------------------------------------- building
    def _on_profile(self, p: Profile | None) -> None:
        self.expanded.clear()
        self.collapsed.clear()
        names = [] if p is None else p.graph.ids() + p.graph.module_paths()
        self._names.setStringList(names)
        self.rebuild(reset_view=True)

    def _on_depth(self) -> None:
        self.module_depth = self.depth_box.currentData()
        self.expanded.clear()
        self.collapsed.clear()
        self.rebuild(reset_view=True)

    def expand_all(self) -> None:
        self.expanded.clear()
        self.collapsed.clear()
        if self.depth_box.currentIndex() != 0:
            self.depth_box.setCurrentIndex(0)  # rebuilds
        else:
            self.rebuild(reset_view=True)

    def toggle_module(self, node_id: str) -> None:
        """Expand a collapsed module node, or collapse the innermost module around a layer node."""
        p = self.state.profile
        if p is None:
            return
        if node_id not in p.graph:  # a module node: open it
            self.collapsed.discard(node_id)
            self.expanded.add(node_id)
        elif p.graph[node_id].parents:
            parent = p.graph[node_id].parents[-1]
            self.expanded.discard(parent)
            self.collapsed.add(parent)
        self.rebuild()

    def rebuild(self, reset_view: bool = False) -> None:
        """Lay the graph out for the current depth/expansions: at once for small graphs, in a worker
        thread for large ones (the previous drawing stays until the new one is ready)."""
        self._generation += 1
        gen = self._generation
        p = self.state.profile
        if p is None:
            self.pending = False
            self._show(None, None, reset_view)
            return
        args = (self.module_depth, frozenset(self.expanded), frozenset(self.collapsed))
        if len(p.graph) <= BIG_MODEL_LAYERS:
            self._show(p, drawing(p, *args), reset_view)
            return
        self.pending = True
        self._reset_next = self._reset_next or reset_view
        self.info.setText(f"laying out {len(p.graph):,} layers…")
        worker = create_worker(drawing, p, *args, _start_thread=False)
        worker.returned.connect(functools.partial(self._on_layout, gen, p))
        worker.errored.connect(self._on_layout_error)
        worker.finished.connect(functools.partial(self._forget, worker))
        self._worker = worker
        worker.start()

    def _forget(self, worker) -> None:
        if self._worker is worker:
            self._worker = None

    def _on_layout_error(self, exc: BaseException) -> None:
        self.info.setText(f"layout failed: {exc}")

    def _on_layout(self, gen: int, p: Profile, view: Drawing) -> None:
        if gen != self._generation or p is not self.state.profile:
            return  # a newer request or another profile superseded it
        reset, self._reset_next = self._reset_next, False

        def show() -> None:
            self.pending = False
            if gen == self._generation:
                self._show(p, view, reset)

        self.state.later(show)  # queued with the other views' refreshes: one heavy step per turn

    def _show(self, p: Profile | None, view: Drawing | None, reset_view: bool) -> None:
        if p is None or view is None:
            self.scatter.setData([])
            self.edges.setData([], [])
            self.selected.setData([])
            self.nodes, self.node_index, self.mapping, self.node_pos = [], {}, {}, {}
            self.xy, self.share, self.left = np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=bool)
            self._update_labels()
            self.info.setText("")
            self.laidOut.emit()
            return
        self.mapping, self.nodes, self.node_pos = view.graph.mapping, view.graph.nodes, view.graph.pos
        self.node_index, self.xy, self.share, self._kinds = view.node_index, view.xy, view.share, view.kinds
        self.left = view.left
        self._has_modules = any(k == "module" for k in self._kinds)
        self._paint()
        gen = self._generation

        def finish() -> None:  # edges, selection, view and labels: the next event-loop turn on big graphs
            self._painting = False
            if gen != self._generation:
                return
            if len(view.ends):
                self.edges.setData(self.xy[view.ends, 0], self.xy[view.ends, 1], connect="pairs")
            else:
                self.edges.setData([], [])
            self.info.setText(f"{len(self.nodes):,} nodes · {len(p.graph):,} layers · squares = collapsed modules "
                              "(double-click to open)")
            self.info.setToolTip("Blue: memory-bound, orange: compute-bound, grey: no work; darker and bigger = slower. "
                                 "Purple squares: collapsed modules. Double-click a module to open it, a layer to close its module.")
            self._on_selection(self.state.selected)
            if reset_view:
                self._reset_view()
            self._update_labels()
            self.laidOut.emit()

        if len(self.nodes) > BIG_MODEL_LAYERS:
            self._painting = True
            self.state.later(finish)  # its own turn, with room for input and paint before it
        else:
            finish()

    def busy(self) -> bool:
        """A layout or a deferred repaint is still on its way."""
        return self.pending or self._painting or self._filling

    def _paint(self, positions: bool = True) -> None:
        """Spot colours and sizes from the latency shares, with one shared brush per shade. Positions
        and sizes go first; the per-spot brushes follow in the next event-loop turn, so neither step
        holds the GUI thread for long on a 10,000-node graph."""
        p = self.state.profile
        if p is None or not self.nodes:
            return
        level, brushes = shaded_brushes(self.share, self._kinds, heat=self.color_box.currentIndex() == 1, levels=LEVELS)
        if positions:
            sizes = 8 + 20 * (level + 1) / LEVELS
            symbols = "o" if not self._has_modules else ["s" if k == "module" else "o" for k in self._kinds]
            many = len(self.nodes) > 2000
            self.scatter.setData(x=self.xy[:, 0], y=self.xy[:, 1], size=sizes, symbol=symbols, brush=brushes[0],
                                 pen=None if many else pg.mkPen((60, 60, 60), width=0.8), data=np.arange(len(self.nodes)))
        gen = self._generation

        def fill(lo: int = 0, hi: int | None = None) -> None:  # brushes of spots lo..hi
            hi = len(brushes) if hi is None else hi
            if hi >= len(brushes):
                self._filling = False
            if gen == self._generation and len(brushes) == len(self.scatter.data):
                if lo == 0 and hi >= len(brushes):
                    self.scatter.setBrush(brushes)
                else:  # a slice of pyqtgraph's own spot records (a view: written in place)
                    self.scatter.setBrush(brushes[lo:hi], dataSet=self.scatter.data[lo:hi])
                    self.scatter.update()

        if len(self.nodes) > BIG_MODEL_LAYERS:  # in slices of 4,000 spots, one per turn
            self._filling = True
            for lo in range(0, len(brushes), 4000):
                self.state.later(lambda lo=lo: fill(lo, lo + 4000))
        else:
            fill()

    def _reset_view(self) -> None:
        if not len(self.xy):
            return
        xr, yr, pad = start_range(self.xy, self._readable_ranks())
        self.plot.getViewBox().setRange(xRange=xr, yRange=yr, padding=pad)

    def _readable_ranks(self) -> int:
        return max(8, int(max(self.plot.height(), 200) / 24))  # ~24 px per rank keeps labels apart

    def fit_all(self) -> None:
        if len(self.xy):
            xr, yr = frame(self.xy, margin=(1, 4, 1), least_width=0)
            self.plot.getViewBox().setRange(xRange=xr, yRange=yr, padding=0)

    def fit_selection(self) -> None:
        """Frame the selected nodes (with a margin of a few ranks)."""
        idx = [self.node_index[n] for n in self.selected_nodes() if n in self.node_index]
        if not idx:
            return
        xr, yr = frame(self.xy[idx], margin=(2, 6, 6), least_width=8)
        self.plot.getViewBox().setRange(xRange=xr, yRange=yr, padding=0)

    # -------------------------------------------------------------- labels (level of detail)
    def _update_labels(self) -> None:
        """Label the slowest nodes in view (all of them when few are in view). Siblings in one rank
        are labelled left and right of their dots so their labels do not run into each other."""
        p = self.state.profile
        chosen: list[int] = []
        if p is not None and len(self.xy):
            vb = self.plot.getViewBox()
            chosen = choose_labels(self.xy, self.share, self.left, vb.viewRange(), (vb.width(), vb.height()), MAX_LABELS)
        while len(self.labels) < len(chosen):
            t = pg.TextItem("", color=(40, 40, 40), anchor=(0, 0.5))
            t.setZValue(5)
            self.plot.addItem(t)
            self.labels.append(t)
        self.labelled = []
        for k, t in enumerate(self.labels):
            if p is None or k >= len(chosen):
                t.setVisible(False)
                continue
            j = chosen[k]
            n = self.nodes[j]
            x, y = self.xy[j]
            left = bool(self.left[j])  # the leftmost of several siblings: label to the left
            t.setAnchor((1, 0.5) if left else (0, 0.5))
            t.setText(f"{node_label(p, n)}  " if left else f"  {node_label(p, n)}")
            t.setPos(x, y)
            t.setVisible(True)
            self.labelled.append(n)

    # -------------------------------------------------------------- search
    def find_layer(self, text: str) -> bool:
        """Select the layer or module named ``text`` (exact, else the first whose name contains it)
        and centre it; says so when nothing matches."""
        p = self.state.profile
        text = text.strip()
        if p is None or not text:
            return False
        hit = find_name(p, text)
        if hit is None:
            self.info.setText(f"no layer or module matches “{text}”")
            return False
        if hit in p.graph:
            self.state.select(hit)
        else:  # a module: select its layers, slowest first; the view shows the module node or its open layers
            self.state.select_many(p.slowest_first([lid for lid in p.graph.ids() if hit in p.graph[lid].parents]))
        self.centre_on(self.mapping.get(self.state.selected))
        return True

    def centre_on(self, node: str | None) -> None:
        """Centre the view on a node at a readable zoom (~24 px per rank)."""
        if node is None or node not in self.node_index:
            return
        x, y = self.xy[self.node_index[node]]
        vb = self.plot.getViewBox()
        (vx0, vx1), _ = vb.viewRange()
        rows, w = self._readable_ranks(), min(vx1 - vx0, 12.0)
        vb.setRange(xRange=(x - w / 3, x + 2 * w / 3), yRange=(y - rows / 2, y + rows / 2), padding=0)

    # -------------------------------------------------------------- selection
    def _tip(self, x: float, y: float, data: Any) -> str:
        p = self.state.profile
        if p is None or data is None or data >= len(self.nodes):
            return ""
        return node_tip(p, self.nodes[data])

    def _on_click(self, _item: Any, points: Any, ev: Any = None) -> None:
        if not len(points):
            return
        n = self.nodes[points[0].data()]
        p = self.state.profile
        if p is None:
            return
        if n in p.graph:
            self.state.select_click(n)
        else:  # a module: select its slowest layer so the other views follow
            self.state.select(p.slowest_first([lid for lid, v in self.mapping.items() if v == n])[0])

    def _on_scene_click(self, ev: Any) -> None:
        if not ev.double():
            return
        vb = self.plot.getViewBox()
        pt = vb.mapSceneToView(ev.scenePos())
        hits = self.scatter.pointsAt(pt)
        if len(hits):
            self.toggle_module(self.nodes[hits[0].data()])

    def _on_selection(self, layer_id: str) -> None:
        nodes = list(dict.fromkeys(self.mapping[i] for i in self.state.selected_set if i in self.mapping))
        node = self.mapping.get(layer_id)
        if not layer_id or node is None:
            self.selected.setData([])
            return
        idx = np.array([self.node_index[n] for n in nodes], dtype=int)
        self.selected.setData(x=self.xy[idx, 0], y=self.xy[idx, 1], data=idx)
        x, y = self.xy[self.node_index[node]]
        vb = self.plot.getViewBox()
        (x0, x1), (y0, y1) = vb.viewRange()
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            h, w = y1 - y0, x1 - x0
            vb.setRange(xRange=(x - w / 2, x + w / 2), yRange=(y - h / 2, y + h / 2), padding=0)

    def selected_node(self) -> str | None:
        d = self.selected.data
        return self.nodes[d[0]["data"]] if len(d) else None

    def selected_nodes(self) -> list[str]:
        return [self.nodes[int(v)] for v in self.selected.data["data"]] if len(self.selected.data) else []
