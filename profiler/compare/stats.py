"""Streaming statistics of one tensor over many batches, in constant memory.

* ``StreamingHistogram``: fixed number of bins over a range that doubles (merging bin pairs
  exactly) whenever new values fall outside; percentiles come from it, to one bin's resolution.
* ``TensorStats``: count, min/max, mean/std (float64 sums), zero and non-finite counts, per-channel
  min/max (channel = dim 1, or the last dim of a 3-D [batch, tokens, features] tensor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PERCENTILES", "StreamingHistogram", "TensorStats", "ActivationStats"]

PERCENTILES = (0.01, 0.1, 1.0, 50.0, 99.0, 99.9, 99.99)


class StreamingHistogram:
    """Histogram with a fixed number of bins whose range grows by doubling (exact pairwise merges)."""

    def __init__(self, bins: int = 1024) -> None:
        if bins % 2:
            raise ValueError("bins must be even")
        self.bins = bins
        self.lo = 0.0
        self.width = 0.0
        self.counts = np.zeros(bins, dtype=np.int64)

    @property
    def hi(self) -> float:
        return self.lo + self.bins * self.width

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def edges(self) -> np.ndarray:
        return self.lo + self.width * np.arange(self.bins + 1)

    def _grow(self, lo: float, hi: float) -> None:
        half = self.bins // 2
        while lo < self.lo:
            merged = self.counts.reshape(half, 2).sum(1)
            self.counts = np.zeros_like(self.counts)
            self.counts[half:] = merged
            self.lo -= self.bins * self.width
            self.width *= 2
        while hi > self.hi:
            merged = self.counts.reshape(half, 2).sum(1)
            self.counts = np.zeros_like(self.counts)
            self.counts[:half] = merged
            self.width *= 2

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1).double()
        x = x[torch.isfinite(x)]
        if not x.numel():
            return
        lo, hi = x.min().item(), x.max().item()
        if self.width == 0.0:
            span = hi - lo
            self.lo = lo
            self.width = span / self.bins if span > 0 else max(abs(lo), 1.0) * 1e-6
        self._grow(lo, hi)
        idx = ((x - self.lo) / self.width).floor().clamp_(0, self.bins - 1).long()
        self.counts += np.bincount(idx.numpy(), minlength=self.bins)

    def percentile(self, q: float) -> float:
        """Value below which ``q`` % of the values lie (linear within a bin)."""
        total = self.total
        if not total:
            return float("nan")
        cdf = np.cumsum(self.counts)
        target = q / 100 * total
        k = int(np.searchsorted(cdf, target, side="left"))
        k = min(k, self.bins - 1)
        before = cdf[k - 1] if k else 0
        inside = self.counts[k]
        frac = (target - before) / inside if inside else 0.0
        return self.lo + (k + frac) * self.width

    def rebinned(self, edges: np.ndarray) -> np.ndarray:
        """Counts on other ``edges`` (the CDF interpolated linearly within bins): for shared-bin overlays."""
        if not self.total:
            return np.zeros(len(edges) - 1)
        cdf = np.concatenate([[0.0], np.cumsum(self.counts)])
        at = np.interp(edges, self.edges(), cdf)
        return np.diff(at)


class TensorStats:
    def __init__(self, bins: int = 1024) -> None:
        self.count = 0
        self.min = math.inf
        self.max = -math.inf
        self.sum = 0.0
        self.sumsq = 0.0
        self.zeros = 0
        self.nonfinite = 0
        self.hist = StreamingHistogram(bins)
        self.ch_min: torch.Tensor | None = None
        self.ch_max: torch.Tensor | None = None
        self.shape: tuple[int, ...] = ()

    @staticmethod
    def channel_axis(t: torch.Tensor) -> int | None:
        if t.dim() <= 1:
            return None
        return t.dim() - 1 if t.dim() == 3 else 1

    def add(self, t: torch.Tensor) -> None:
        t = t.detach()
        self.shape = tuple(t.shape)
        finite = torch.isfinite(t)
        self.nonfinite += int((~finite).sum())
        x = t.double()
        if not bool(finite.all()):
            x = torch.where(finite, x, torch.zeros_like(x))
        self.count += x.numel()
        if x.numel():
            self.min = min(self.min, x.min().item())
            self.max = max(self.max, x.max().item())
        self.sum += x.sum().item()
        self.sumsq += x.pow(2).sum().item()
        self.zeros += int((x == 0).sum())
        self.hist.add(x)
        ax = self.channel_axis(t)
        if ax is not None and x.numel():
            moved = x.movedim(ax, 0).reshape(x.shape[ax], -1)
            lo, hi = moved.amin(1), moved.amax(1)
            if self.ch_min is None or self.ch_max is None or self.ch_min.shape != lo.shape:
                self.ch_min, self.ch_max = lo, hi
            else:
                self.ch_min, self.ch_max = torch.minimum(self.ch_min, lo), torch.maximum(self.ch_max, hi)

    def freeze(self) -> ActivationStats:
        n = max(self.count, 1)
        mean = self.sum / n
        var = max(self.sumsq / n - mean * mean, 0.0)
        return ActivationStats(
            self.count, self.shape, self.min, self.max, mean, math.sqrt(var),
            # a percentile interpolated within a bin may pass the exact extremes; it never lies outside them
            {str(q): min(max(self.hist.percentile(q), self.min), self.max) for q in PERCENTILES}, self.zeros / n, self.nonfinite,
            self.hist.lo, self.hist.width, tuple(int(c) for c in self.hist.counts),
            tuple(self.ch_min.tolist()) if self.ch_min is not None else (),
            tuple(self.ch_max.tolist()) if self.ch_max is not None else (),
        )


@dataclass(frozen=True)
class ActivationStats:
    count: int
    shape: tuple[int, ...]  # of the last batch
    min: float
    max: float
    mean: float
    std: float
    percentiles: dict[str, float]  # "0.01" … "99.99" -> value (histogram resolution)
    zero_fraction: float
    nonfinite: int
    hist_lo: float
    hist_width: float
    hist_counts: tuple[int, ...]
    channel_min: tuple[float, ...]
    channel_max: tuple[float, ...]

    @property
    def absmax(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.count else 0.0

    @property
    def range(self) -> float:
        return self.max - self.min if self.count else 0.0

    def histogram(self) -> StreamingHistogram:
        h = StreamingHistogram(len(self.hist_counts))
        h.lo, h.width, h.counts = self.hist_lo, self.hist_width, np.array(self.hist_counts, dtype=np.int64)
        return h
