"""The one policy for comparing two timings: reference and candidate run interleaved (ABAB…, same threads, same
inputs), the change is the median of the per-pair ratios with a bootstrap confidence interval over the pairs, and
the verdict has three values: *faster*, *slower*, or *within noise* when the interval holds 1 (no change). A
noisy machine widens the interval instead of flipping the verdict.

Every job that says "before → after" (compress, the app's Apply, each sweep candidate) times through
``time_pair`` and reads its ``PairedTiming``; ``ratio_interval`` and ``verdict`` serve numbers measured elsewhere
(ONNX Runtime's float and int8 sessions).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .resources import other_load_now, threads, untouched
from .timing import BUSY_LOAD

__all__ = ["PairedTiming", "time_pair", "time_interleaved", "busy_threads", "ratio_interval", "verdict", "FASTER", "SLOWER", "WITHIN_NOISE", "CONFIDENCE"]

log = logging.getLogger(__name__)

FASTER, SLOWER, WITHIN_NOISE = "faster", "slower", "within noise"
CONFIDENCE = 0.95
_RESAMPLES = 2000


def verdict(low: float, high: float, line: float = 1.0) -> str:
    """*faster* when the whole interval lies below ``line``, *slower* when above it, else *within noise*."""
    if high < line:
        return FASTER
    if low > line:
        return SLOWER
    return WITHIN_NOISE


def ratio_interval(a_ms: Sequence[float], b_ms: Sequence[float], confidence: float = CONFIDENCE,
                   seed: int = 0) -> tuple[float, float, float]:
    """The median of the per-pair ratios b/a, and its ``confidence`` interval by a percentile bootstrap over the pairs
    (seeded: the same runs give the same interval). Pairs, not two separate medians: both runs of a pair saw the
    same moment of a busy machine, so what the machine did cancels in their ratio."""
    a, b = np.asarray(a_ms, dtype=float), np.asarray(b_ms, dtype=float)
    if len(a) != len(b) or not len(a):
        raise ValueError("paired timings need the same number of runs on both sides, at least one")
    ratios = b / np.maximum(a, 1e-12)
    mid = float(np.median(ratios))
    if len(ratios) < 3:  # too few pairs to say anything about the spread
        return mid, 0.0, float("inf")
    picks = np.random.default_rng(seed).integers(0, len(ratios), size=(_RESAMPLES, len(ratios)))
    medians = np.median(ratios[picks], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return mid, float(low), float(high)


@dataclass(frozen=True)
class PairedTiming:
    """Reference (a) and candidate (b) timed run by run, interleaved."""

    a_ms: float  # median of the reference's runs
    b_ms: float
    ratio: float  # median of the per-pair ratios b/a
    ratio_low: float  # its confidence interval (CONFIDENCE)
    ratio_high: float
    runs: int
    threads: int

    @property
    def verdict(self) -> str:
        return verdict(self.ratio_low, self.ratio_high)

    def text(self) -> str:
        """``0.62× (95% CI 0.58–0.66×): faster``."""
        if self.ratio_high == float("inf"):
            return f"{self.ratio:.2f}× (too few runs for an interval: {self.verdict})"
        return f"{self.ratio:.2f}× ({CONFIDENCE:.0%} CI {self.ratio_low:.2f}–{self.ratio_high:.2f}×): {self.verdict}"


def time_interleaved(run_a: Callable[[], object], run_b: Callable[[], object], runs: int = 20, warmup: int = 3,
                     clock: Callable[[], int] = time.perf_counter_ns) -> PairedTiming:
    """Two callables timed run by run, interleaved (a, b, a, b…) after ``warmup`` runs of each, at the current torch
    threads; ``clock`` (ns) is injectable for tests. Eager models (``time_pair``) and ORT sessions alike."""
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(warmup):
        run_a()
        run_b()
    for _ in range(runs):
        for run, out in ((run_a, ta), (run_b, tb)):
            t0 = clock()
            run()
            out.append((clock() - t0) / 1e6)
    ratio, low, high = ratio_interval(ta, tb)
    return PairedTiming(statistics.median(ta), statistics.median(tb), ratio, low, high, runs, torch.get_num_threads())


@torch.inference_mode()
def time_pair(a: nn.Module, b: nn.Module, inputs: Sequence[torch.Tensor], runs: int = 20, warmup: int = 3,
              clock: Callable[[], int] = time.perf_counter_ns) -> PairedTiming:
    """Eager latency of two models on the same inputs, interleaved (``time_interleaved``); both left as they were."""
    with untouched(a), untouched(b):
        return time_interleaved(lambda: a(*inputs), lambda: b(*inputs), runs, warmup, clock)


@contextmanager
def busy_threads(requested: int | None, device: str = "cpu", static: bool = False) -> Iterator[list[str]]:
    """The thread policy every timing job runs under (profile, compress, the app's Apply). On a CPU whose other
    processes already use more than ``BUSY_LOAD`` of it, and unless the user chose ``--threads``, time at one thread:
    at n threads every parallel op waits for a preempted thread and rankings and ratios are lost. Yields the list
    the reason is appended to (empty when nothing changed), to be shown with the result."""
    said: list[str] = []
    n = torch.get_num_threads()
    busy = other_load_now() if requested is None and n > 1 and device.startswith("cpu") and not static else None
    one = busy is not None and busy > BUSY_LOAD
    if one:
        said.append(f"the machine was busy before timing (other processes used {busy:.0%} of the CPUs): timed at 1 thread "
                    f"instead of {n}, because at {n} threads every parallel op waits for a preempted thread and the ranking "
                    f"is lost; --threads {n} to insist")
        log.warning("%s", said[0])
    with threads(1 if one else None):
        yield said
