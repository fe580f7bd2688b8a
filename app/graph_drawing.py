"""What the layer graph view draws, computed without Qt (off the GUI thread for big graphs): the nodes at
the chosen depth with their positions, latency shares, bound classes and edges, and which of them get a
label in the current view."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from layerscope.profiler import Profile
from layerscope.profiler.format import fmt_ms, fmt_pct
from layerscope.profiler.graph import GraphView

LABEL_HEIGHT_PX = 15.0
LABEL_WIDTH_PX = 180.0  # the text of a label, roughly: three cells of 60 px beside its dot


def choose_labels(xy: np.ndarray, share: np.ndarray, left: np.ndarray, view_range: tuple, view_px: tuple[float, float],
                  most: int) -> list[int]:
    """The nodes to label in view, slowest first, greedily: a label only where it overlaps none already
    placed (a left label, for the leftmost of siblings, covers the cells left of its dot)."""
    (x0, x1), (y0, y1) = view_range
    xs, ys = xy[:, 0], xy[:, 1]
    inside = np.flatnonzero((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1))
    inside = inside[np.argsort(-share[inside], kind="stable")]  # slowest first
    w_px, h_px = max(view_px[0], 1.0), max(view_px[1], 1.0)
    sx, sy = w_px / max(x1 - x0, 1e-9), h_px / max(y1 - y0, 1e-9)  # pixels per unit
    rows = np.floor(ys[inside] * sy / LABEL_HEIGHT_PX).astype(np.int64)
    cell = LABEL_WIDTH_PX / 3
    start = np.floor((xs[inside] * sx - np.where(left[inside], LABEL_WIDTH_PX, 0.0)) / cell).astype(np.int64)
    py = ys[inside] * sy
    taken: dict[tuple[int, int], float] = {}  # (row, cell) -> y in pixels of the label there
    chosen: list[int] = []
    for k, i in enumerate(inside):
        r, c0, y_px = int(rows[k]), int(start[k]), float(py[k])
        near = (taken.get((r + dr, c)) for dr in (-1, 0, 1) for c in range(c0, c0 + 3))
        if any(q is not None and abs(q - y_px) < LABEL_HEIGHT_PX - 1 for q in near):
            continue
        taken.update({(r, c): y_px for c in range(c0, c0 + 3)})
        chosen.append(int(i))
        if len(chosen) >= most:
            break
    return chosen


@dataclass(frozen=True)
class Drawing:
    """Everything the graph view draws, computed off the GUI thread for big graphs."""

    graph: GraphView
    node_index: dict[str, int]
    xy: np.ndarray  # (nodes, 2) positions
    share: np.ndarray  # latency share per node
    kinds: list  # Bound per layer node, "module" per collapsed module
    ends: np.ndarray  # node indices of edge ends, pairwise
    left: np.ndarray  # per node: the leftmost of several in its rank (its label goes left)


def drawing(p: Profile, depth: int | None, expanded: frozenset[str], collapsed: frozenset[str]) -> Drawing:
    view = p.graph.view(depth, expanded, collapsed)
    nodes = view.nodes
    index = {n: i for i, n in enumerate(nodes)}
    rows, row_index = p.rows(), p.row_index()
    share: list[float] = []
    kinds: list[str] = []
    for n in nodes:
        if n in row_index:  # a layer: the core's share and bound
            r = rows[row_index[n]]
            share.append(r.latency_share)
            kinds.append(r.bound)
        else:
            share.append(p.module_totals(n).latency_share)
            kinds.append("module")
    xy = np.array([view.pos[n] for n in nodes], dtype=float).reshape(-1, 2)
    ends = np.array([(index[a], index[b]) for a, b in view.edges], dtype=np.int64).reshape(-1)
    left = np.zeros(len(nodes), dtype=bool)
    if len(nodes):
        ranks, inverse, counts = np.unique(xy[:, 1], return_inverse=True, return_counts=True)
        lowest = np.full(len(ranks), np.inf)
        np.minimum.at(lowest, inverse, xy[:, 0])
        left = (counts[inverse] > 1) & (xy[:, 0] == lowest[inverse])
    return Drawing(view, index, xy, np.array(share, dtype=float), kinds, ends, left)


def node_label(p: Profile, n: str) -> str:
    """A node's label: a layer's id and type; a collapsed module's size, time and share."""
    if n in p.graph:
        return f"{n} · {p.graph[n].type_name}"
    t = p.module_totals(n)
    return f"▸ {n} · {t.layers} layers · {fmt_ms(t.latency_ms)} ms · {fmt_pct(t.latency_share)}"


def node_tip(p: Profile, n: str) -> str:
    if n in p.graph:
        r = p.row(n)
        ms = f"{fmt_ms(r.timing.latency_ms)} ms, " if r.timing else ""
        return f"{r.layer.label}\n{r.bound.value}, {ms}{fmt_pct(r.latency_share)} of latency"
    t = p.module_totals(n)
    return f"{n} (module, {t.layers} layers)\n{fmt_ms(t.latency_ms)} ms, {fmt_pct(t.latency_share)} of latency — double-click to expand"


def find_name(p: Profile, text: str) -> str | None:
    """The layer or module named ``text``, else the first whose name contains it (any case)."""
    if text in p.graph or text in p.module_table():
        return text
    low = text.lower()
    return next((n for n in p.graph.ids() + p.graph.module_paths() if low in n.lower()), None)



def start_range(xy: np.ndarray, ranks: int) -> tuple[tuple[float, float], tuple[float, float], float]:
    """The first view of a graph: its top ``ranks`` ranks at a readable zoom (the whole graph when it
    has fewer), with room for labels; (x range, y range, padding)."""
    xs, ys = xy[:, 0], xy[:, 1]
    wide = xs.max() > xs.min()  # branches: the leftmost siblings are labelled to their left
    xr = (float(xs.min() - (4 if wide else 1)), float(max(xs.max() + 4, xs.min() + 8)))
    top = float(ys.max())
    if len(np.unique(ys)) > ranks:  # start at the top, readable, rather than the whole tall DAG
        return xr, (top - ranks, top + 1), 0.0
    return xr, (float(ys.min()) - 0.5, top + 0.5), 0.02


def frame(pts: np.ndarray, margin: tuple[float, float, float], least_width: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """x and y ranges around ``pts`` with (left, right, above/below) margins, at least ``least_width`` wide."""
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    left, right, vertical = margin
    return (float(x0 - left), float(max(x1 + right, x0 + least_width))), (float(y0 - vertical), float(y1 + vertical))
