"""The Pareto front of candidates (lower cost, higher quality) and its knee."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["pareto_front", "knee"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates, by cost ascending. A point (cost, quality)
    dominates another when its cost is <= and its quality >=, one of them strictly. Points with a
    NaN coordinate never enter the front; equal points are kept once (the first)."""
    order = sorted((i for i, (c, q) in enumerate(points) if not (math.isnan(c) or math.isnan(q))),
                   key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best = -math.inf
    for i in order:
        q = points[i][1]
        if q > best:
            front.append(i)
            best = q
    return front


def knee(points: Sequence[tuple[float, float]], front: Sequence[int]) -> int | None:
    """The front's knee: the point farthest from the straight line joining its two ends, with both
    axes scaled to [0, 1] over the front (where a little more cost stops buying much quality).
    None with fewer than three points on the front, or when the front is a straight line."""
    if len(front) < 3:
        return None
    cs = [points[i][0] for i in front]
    qs = [points[i][1] for i in front]
    c_span = (max(cs) - min(cs)) or 1.0
    q_span = (max(qs) - min(qs)) or 1.0
    xy = [((c - min(cs)) / c_span, (q - min(qs)) / q_span) for c, q in zip(cs, qs, strict=True)]
    (x0, y0), (x1, y1) = xy[0], xy[-1]
    length = math.hypot(x1 - x0, y1 - y0)
    if length == 0:
        return None
    dist = [abs((y1 - y0) * x - (x1 - x0) * y + x1 * y0 - y1 * x0) / length for x, y in xy]
    best = max(range(1, len(front) - 1), key=lambda k: dist[k])
    return front[best] if dist[best] > 1e-9 else None
