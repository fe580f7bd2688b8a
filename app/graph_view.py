"""Layer graph: a top-to-bottom DAG of layers, coloured by bound class and shaded/sized by latency
share. Modules can be collapsed to one node (depth selector; double-click a module to expand it,
double-click a layer to collapse its parent). Pan/zoom come from pyqtgraph's ViewBox."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from layerscope.profiler import Profile

from .state import AppState
from .style import MODULE_COLOR, SELECTED_COLOR, bound_color

MAX_LABELS = 400


class LayerGraphView(QWidget):
    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state
        self.expanded: set[str] = set()  # modules opened although below the depth
        self.collapsed: set[str] = set()  # modules closed by the user
        self.depth: int | None = None  # None: all layers
        self.nodes: list[str] = []  # visible node ids, index = spot data
        self.mapping: dict[str, str] = {}  # layer id -> visible node id
        self.pos: dict[str, tuple[float, float]] = {}

        self.depth_box = QComboBox()
        self.depth_box.addItem("All layers", None)
        for d in (1, 2, 3):
            self.depth_box.addItem(f"Modules to depth {d}", d)
        self.depth_box.currentIndexChanged.connect(self._on_depth)
        expand = QPushButton("Expand all")
        expand.clicked.connect(self.expand_all)
        self.info = QLabel()
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Show:"))
        bar.addWidget(self.depth_box)
        bar.addWidget(expand)
        bar.addStretch(1)
        bar.addWidget(self.info)

        self.plot = pg.PlotWidget(background="w")
        self.plot.hideAxis("bottom")
        self.plot.hideAxis("left")
        self.plot.setAspectLocked(False)
        self.plot.getViewBox().invertY(False)
        self.edges = pg.PlotCurveItem(pen=pg.mkPen((150, 150, 150), width=1))
        self.scatter = pg.ScatterPlotItem(pxMode=True, hoverable=True, tip=self._tip)
        self.selected = pg.ScatterPlotItem(pxMode=True, size=26, brush=None, pen=pg.mkPen(SELECTED_COLOR, width=3))
        self.plot.addItem(self.edges)
        self.plot.addItem(self.scatter)
        self.plot.addItem(self.selected)
        self.labels: list[pg.TextItem] = []
        self.scatter.sigClicked.connect(self._on_click)
        self.plot.scene().sigMouseClicked.connect(self._on_scene_click)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.plot)
        state.profileChanged.connect(lambda _p: self.rebuild(reset_view=True))
        state.selectionChanged.connect(self._on_selection)

    # -------------------------------------------------------------- building
    def _on_depth(self) -> None:
        self.depth = self.depth_box.currentData()
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
        for item in self.labels:
            self.plot.removeItem(item)
        self.labels = []
        p = self.state.profile
        if p is None:
            self.scatter.setData([])
            self.edges.setData([], [])
            self.selected.setData([])
            self.nodes = []
            return
        self.mapping, edges = p.graph.collapsed(self.depth, self.expanded, self.collapsed)
        self.nodes = list(dict.fromkeys(self.mapping.values()))
        self.pos = p.graph.dag_layout(self.nodes, edges)
        spots = []
        max_share = max((self._share(p, n) for n in self.nodes), default=1.0) or 1.0
        for i, n in enumerate(self.nodes):
            share = self._share(p, n)
            rel = math.sqrt(share / max_share)
            if n in p.graph:
                color = bound_color(p.roofline[n].bound, alpha=int(70 + 185 * rel))
                symbol = "o"
            else:
                color = MODULE_COLOR
                color.setAlpha(int(70 + 185 * rel))
                symbol = "s"
            x, y = self.pos[n]
            spots.append({"pos": (x, y), "size": 8 + 20 * rel, "brush": pg.mkBrush(color), "symbol": symbol,
                          "pen": pg.mkPen((60, 60, 60), width=0.8), "data": i})
        self.scatter.setData(spots)
        xs, ys = [], []
        for a, b in edges:
            (x0, y0), (x1, y1) = self.pos[a], self.pos[b]
            xs += [x0, x1]
            ys += [y0, y1]
        self.edges.setData(np.array(xs, dtype=float), np.array(ys, dtype=float), connect="pairs")
        if len(self.nodes) <= MAX_LABELS:
            for n in self.nodes:
                label = f"{n}  ▸ module" if n not in p.graph else f"{n} · {p.graph[n].type_name}"
                t = pg.TextItem("  " + label, color=(40, 40, 40), anchor=(0, 0.5))
                t.setPos(*self.pos[n])
                self.plot.addItem(t)
                self.labels.append(t)
        self.info.setText(f"{len(self.nodes)} nodes · {len(p.graph)} layers · blue memory-bound, orange compute-bound, "
                          "purple squares = collapsed modules")
        self._on_selection(self.state.selected)
        if reset_view:
            vb = self.plot.getViewBox()
            vb.autoRange()
            xs_all = [x for x, _ in self.pos.values()]
            vb.setXRange(min(xs_all) - 1, max(max(xs_all) + 4, min(xs_all) + 8), padding=0)  # room for labels
            ys_all = [y for _, y in self.pos.values()]
            rows = max(8, int(max(self.plot.height(), 200) / 24))  # ~24 px per rank keeps labels apart
            if len(set(ys_all)) > rows:  # start at the top, readable, rather than the whole tall DAG
                top = max(ys_all)
                self.plot.getViewBox().setYRange(top - rows, top + 1, padding=0)

    @staticmethod
    def _share(p: Profile, node: str) -> float:
        if node in p.graph:
            t = p.timings.get(node)
            return t.latency_ms / (p.summary.sum_of_layer_medians_ms or 1.0) if t else 0.0
        return p.module_totals(node).latency_share

    # -------------------------------------------------------------- selection
    def _tip(self, x: float, y: float, data: Any) -> str:
        p = self.state.profile
        if p is None or data is None or data >= len(self.nodes):
            return ""
        n = self.nodes[data]
        if n in p.graph:
            r = p.row(n)
            return f"{r.layer.label}\n{r.bound.value}, {100 * r.latency_share:.1f}% of latency"
        t = p.module_totals(n)
        return f"{n} (module, {t.layers} layers)\n{100 * t.latency_share:.1f}% of latency — double-click to expand"

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
            members = [lid for lid, v in self.mapping.items() if v == n]
            self.state.select(max(members, key=lambda lid: p.timings[lid].latency_ms))

    def _on_scene_click(self, ev: Any) -> None:
        if not ev.double():
            return
        vb = self.plot.getViewBox()
        pt = vb.mapSceneToView(ev.scenePos())
        hits = self.scatter.pointsAt(pt)
        if len(hits):
            self.toggle_module(self.nodes[hits[0].data()])

    def node_for(self, layer_id: str) -> str | None:
        return self.mapping.get(layer_id)

    def _on_selection(self, layer_id: str) -> None:
        nodes = list(dict.fromkeys(self.mapping[i] for i in self.state.selected_set if i in self.mapping))
        node = self.mapping.get(layer_id)
        if not layer_id or node is None:
            self.selected.setData([])
            return
        self.selected.setData([{"pos": self.pos[n], "data": self.nodes.index(n)} for n in nodes])
        x, y = self.pos[node]
        vb = self.plot.getViewBox()
        (x0, x1), (y0, y1) = vb.viewRange()
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            h, w = y1 - y0, x1 - x0
            vb.setRange(xRange=(x - w / 2, x + w / 2), yRange=(y - h / 2, y + h / 2), padding=0)

    def selected_node(self) -> str | None:
        pts = self.selected.data
        return self.nodes[pts[0]["data"]] if len(pts) else None

    def selected_nodes(self) -> list[str]:
        return [self.nodes[d["data"]] for d in self.selected.data]

