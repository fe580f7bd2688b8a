"""Measured per-layer latency and activation memory.

Per-layer time comes from running the captured GraphModule through an fx Interpreter that times
each node (``perf_counter_ns`` on CPU; CUDA events on a GPU) and sums nodes into their layer.
End-to-end time is the plain eager ``model(*inputs)``. The two are interleaved run by run so that
machine noise hits both alike; the fidelity line compares the sum of per-layer medians with the
end-to-end median (the gap is interpreter overhead plus glue such as shape queries).

Activation memory is read off the real run: a tensor storage is live from the node that creates it
until its last use; weights are not activations. On CUDA the allocator's peak is reported too.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .capture import CaptureResult
from .capture.record import tensors_of
from .capture.weights import weight_bytes
from .progress import Progress, Work, checkpoint
from .resources import OtherLoad, untouched

__all__ = ["LayerTiming", "TimingSummary", "TimingResult", "measure", "within_noise", "NOISY_SPREAD", "FIDELITY_BAND",
           "BUSY_LOAD"]

NOISY_SPREAD = 0.3  # IQR / median above this: a noisy layer
NOISY_FLOOR_MS = 0.02
FIDELITY_BAND = 0.15  # per-layer sum within ±15 % of end-to-end, else the summary explains the gap
BUSY_LOAD = 0.15  # other processes used more than this share of the CPUs while we timed: warn
SIGNIFICANT_SHARE = 0.01  # layers below 1 % of the time do not extend the runs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerTiming:
    latency_ms: float  # median over runs
    p25_ms: float
    p75_ms: float
    min_ms: float
    output_bytes: int  # activation memory this layer allocated (0 for views and in-place ops)
    live_bytes_after: int  # activation memory alive right after this layer ran

    @property
    def spread_ms(self) -> float:
        """Inter-quartile range."""
        return self.p75_ms - self.p25_ms


@dataclass(frozen=True)
class TimingSummary:
    device: str
    timer: str
    runs: int
    warmup: int
    threads: int
    end_to_end_ms: float  # median eager forward
    end_to_end_p25_ms: float
    end_to_end_p75_ms: float
    sum_of_layer_medians_ms: float
    glue_ms: float  # median time of non-layer nodes (shape queries, tuple unpacking)
    weight_bytes: int
    peak_activation_bytes: int
    peak_memory_bytes: int  # weights + peak live activations (or the CUDA allocator's peak)
    peak_memory_source: str
    runs_requested: int = 0  # ``runs`` asked for; ``runs`` is what was taken (more while layers stayed noisy)
    other_load: float | None = None  # share of the CPUs other processes used while timing (Linux)
    noisy_layers: tuple[str, ...] = ()  # layers whose spread stayed above NOISY_SPREAD
    warnings: tuple[str, ...] = ()  # why a number here should not be trusted as it stands

    @property
    def busy(self) -> bool:
        """Other processes used more than BUSY_LOAD of the CPUs while timing."""
        return self.other_load is not None and self.other_load > BUSY_LOAD

    @property
    def fidelity(self) -> float:
        """Sum of per-layer medians / end-to-end median (1.0 = per-layer times add up exactly)."""
        return self.sum_of_layer_medians_ms / self.end_to_end_ms if self.end_to_end_ms > 0 else float("nan")


@dataclass(frozen=True)
class TimingResult:
    layers: dict[str, LayerTiming]
    summary: TimingSummary


def _still_noisy(per_layer: dict[str, list[float]]) -> list[str]:
    """Layers holding at least SIGNIFICANT_SHARE of the time whose spread (IQR / median) is above
    NOISY_SPREAD *and* three times the typical spread of such layers. On a quiet machine that is any
    layer over 30 %; under a load that widens every layer alike, only the ones hit far worse than the
    rest (one conv at 27 ms ± 58 beside its 1.5 ms twin): their medians would lead a ranking falsely,
    while evenly-loaded medians still rank right."""
    stats = {lid: _quantiles(v) for lid, v in per_layer.items() if v}
    total = sum(q[0] for q in stats.values()) or 1.0
    rel = {lid: (p75 - p25) / med for lid, (med, p25, p75, _) in stats.items()
           if med >= SIGNIFICANT_SHARE * total and p75 - p25 > NOISY_FLOOR_MS}
    if not rel:
        return []
    typical = statistics.median(rel.values()) if len(rel) >= 5 else 0.0
    limit = max(NOISY_SPREAD, 3 * typical)
    return [lid for lid, r in rel.items() if r > limit]


def _warnings(other: float | None, noisy: tuple[str, ...], fidelity: float, threads: int, runs: int) -> tuple[str, ...]:
    out = []
    if other is not None and other > BUSY_LOAD:
        out.append(f"the machine was busy: other processes used {other:.0%} of the CPUs while timing, so latencies include "
                   f"their interference" + (f"; at {threads} threads every parallel op waits for its slowest thread, so "
                                            f"rankings suffer most: --threads 1 keeps them steady" if threads > 1 else ""))
    if noisy:
        out.append(f"{len(noisy)} layer(s) stayed noisy after {runs} runs (middle half of the runs wider than "
                   f"{NOISY_SPREAD:.0%} of the median and than 3x the other layers'): {', '.join(noisy[:5])}"
                   f"{' …' if len(noisy) > 5 else ''}; they are left out of the headline ranking")
    if fidelity == fidelity and abs(fidelity - 1) > FIDELITY_BAND:
        why = ("whole forwards were slowed by interference that per-layer medians skip, or time went to ops no layer owns"
               if fidelity < 1 else "timing each node costs interpreter and timer overhead, and a layer run alone "
               "misses the caches a whole forward keeps warm")
        out.append(f"per-layer medians add up to {fidelity:.0%} of end-to-end (outside ±{FIDELITY_BAND:.0%}): {why}")
    return tuple(out)


def within_noise(before: LayerTiming | None, after: LayerTiming | None) -> bool:
    """A latency change smaller than the wider of the two inter-quartile ranges is not a change:
    run-to-run spread alone moves a median that far."""
    if before is None or after is None:
        return False
    return abs(after.latency_ms - before.latency_ms) <= max(before.spread_ms, after.spread_ms)


def _quantiles(values: Sequence[float]) -> tuple[float, float, float, float]:
    vs = sorted(values)
    if len(vs) == 1:
        return vs[0], vs[0], vs[0], vs[0]
    q = statistics.quantiles(vs, n=4, method="inclusive")
    return statistics.median(vs), q[0], q[2], vs[0]


_SKIP = ("placeholder", "get_attr", "output")


class _NodeTimer(fx.Interpreter):
    """Times every computing node; ``times`` holds ns (CPU) or CUDA event pairs per node."""

    def __init__(self, gm: fx.GraphModule, cuda: bool) -> None:
        super().__init__(gm)
        self.cuda = cuda
        self.times: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.op in _SKIP:
            return super().run_node(n)
        checkpoint()
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        fn = getattr(self, n.op)
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn(n.target, args, kwargs)
            end.record()
            self.times[n.name] = (start, end)
        else:
            t0 = time.perf_counter_ns()
            out = fn(n.target, args, kwargs)
            self.times[n.name] = time.perf_counter_ns() - t0
        return out

    def elapsed_ms(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
            return {k: s.elapsed_time(e) for k, (s, e) in self.times.items()}
        return {k: v / 1e6 for k, v in self.times.items()}


class _MemoryTracker(fx.Interpreter):
    """Follows live activation storages through one run (weights excluded)."""

    def __init__(self, gm: fx.GraphModule, weight_ptrs: frozenset[int]) -> None:
        super().__init__(gm)
        self.weight_ptrs = weight_ptrs
        self.refs: dict[int, list[int]] = {}  # storage ptr -> [nbytes, holders]
        self.held: dict[str, list[int]] = {}  # node -> storage ptrs it holds
        self.live = 0
        self.peak = 0
        self.new_bytes: dict[str, int] = {}
        self.live_after: dict[str, int] = {}

    def run_node(self, n: fx.Node) -> Any:
        checkpoint()
        out = super().run_node(n)
        if n.op not in ("get_attr", "output"):
            ptrs, new = [], 0
            for t in tensors_of(out):
                st = t.untyped_storage()
                ptr = st.data_ptr()
                if ptr in self.weight_ptrs or ptr == 0:
                    continue
                if ptr not in self.refs:
                    self.refs[ptr] = [st.nbytes(), 0]
                    self.live += st.nbytes()
                    new += st.nbytes()
                self.refs[ptr][1] += 1
                ptrs.append(ptr)
            self.held[n.name] = ptrs
            self.new_bytes[n.name] = new
            self.peak = max(self.peak, self.live)
        for dead in self.user_to_last_uses.get(n, []):
            for ptr in self.held.pop(dead.name, []):
                entry = self.refs[ptr]
                entry[1] -= 1
                if entry[1] == 0:
                    self.live -= entry[0]
                    del self.refs[ptr]
        self.live_after[n.name] = self.live
        return out


def measure(cap: CaptureResult, model: nn.Module, inputs: Sequence[torch.Tensor], runs: int = 20, warmup: int = 3,
            max_runs: int | None = None, extra_budget_s: float = 20.0) -> Work[TimingResult]:
    """Time every layer and the whole forward; yields Progress, returns TimingResult.

    After ``runs`` timed runs, while a layer holding at least 1 % of the time is still noisy (its
    IQR over ``NOISY_SPREAD`` of its median), more runs are taken, up to ``max_runs`` (default 4 x
    ``runs``) or ``extra_budget_s`` seconds more, in the spirit of torch.utils.benchmark's adaptive
    autorange. Other processes' CPU use is measured meanwhile; a busy machine, layers that stayed
    noisy and a per-layer sum far from end-to-end each become a warning in the summary."""
    with untouched(model):  # whatever the runs cache on the model is gone afterwards
        return (yield from _measure(cap, model, inputs, runs, warmup, max_runs, extra_budget_s))


class _Runs:
    """The timed runs of one model: end to end, then node by node, summed per layer (glue apart)."""

    def __init__(self, cap: CaptureResult, model: nn.Module, inputs: Sequence[torch.Tensor], cuda: bool) -> None:
        self.gm, self.model, self.inputs, self.cuda = cap.runnable(), model, inputs, cuda
        self.sync = torch.cuda.synchronize if cuda else (lambda: None)
        self.layer_nodes = cap.node_layer
        self.per_layer: dict[str, list[float]] = {lid: [] for lid in cap.graph.ids()}
        self.glue: list[float] = []
        self.e2e: list[float] = []

    def one(self, timed: bool) -> None:
        # Inference mode is entered per run, never held across a yield: a generator suspended (or
        # cancelled) inside it would leave it on for whatever runs next on this thread.
        with torch.inference_mode():
            args = [t.clone() for t in self.inputs]
            self.sync()
            t0 = time.perf_counter_ns()
            self.model(*args)
            self.sync()
            e2e_ms = (time.perf_counter_ns() - t0) / 1e6
            timer = _NodeTimer(self.gm, self.cuda)
            timer.run(*[t.clone() for t in self.inputs])
            self.sync()
            if not timed:
                return
            self.e2e.append(e2e_ms)
            sums: dict[str, float] = {}
            glue_ms = 0.0
            for node, ms in timer.elapsed_ms().items():
                lid = self.layer_nodes.get(node)
                if lid is None:
                    glue_ms += ms
                else:
                    sums[lid] = sums.get(lid, 0.0) + ms
            for lid in self.per_layer:
                self.per_layer[lid].append(sums.get(lid, 0.0))
            self.glue.append(glue_ms)


def _memory(runs: _Runs, weights: Any, device: torch.device) -> tuple[_MemoryTracker, int, str]:
    """One instrumented run: live activation storages per node, and the peak (with the allocator's own
    peak on a GPU), weights included."""
    with torch.inference_mode():
        tracker = _MemoryTracker(runs.gm, weights.storages)
        if runs.cuda:
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        tracker.run(*[t.clone() for t in runs.inputs])
        if runs.cuda:
            runs.sync()
            peak = torch.cuda.max_memory_allocated(device) - base + weights.total
            return tracker, int(peak), "torch.cuda.max_memory_allocated during an instrumented run, plus weights"
        return tracker, int(weights.total + tracker.peak), "weights + peak of live activation storages during a real run"


def _layer_timings(runs: _Runs, tracker: _MemoryTracker) -> dict[str, LayerTiming]:
    new_by_layer: dict[str, int] = {}
    after_by_layer: dict[str, int] = {}
    for node, lid in runs.layer_nodes.items():
        new_by_layer[lid] = new_by_layer.get(lid, 0) + tracker.new_bytes.get(node, 0)
        if node in tracker.live_after:
            after_by_layer[lid] = tracker.live_after[node]  # last node of the layer wins
    layers: dict[str, LayerTiming] = {}
    for lid, vals in runs.per_layer.items():
        med, p25, p75, mn = _quantiles(vals)
        layers[lid] = LayerTiming(med, p25, p75, mn, new_by_layer.get(lid, 0), after_by_layer.get(lid, 0))
    return layers


def _measure(cap: CaptureResult, model: nn.Module, inputs: Sequence[torch.Tensor], runs: int, warmup: int,
             max_runs: int | None, extra_budget_s: float) -> Work[TimingResult]:
    if runs < 1:
        raise ValueError("runs must be >= 1")
    max_runs = max(runs, max_runs if max_runs is not None else min(4 * runs, 400))
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else (inputs[0].device if inputs else torch.device("cpu"))
    r = _Runs(cap, model, inputs, device.type == "cuda")
    wb = weight_bytes(model)
    for i in range(warmup):
        r.one(False)
        yield Progress("warm-up", i + 1, warmup + runs, f"run {i + 1}")
    load = OtherLoad()
    target, extra_since = runs, None
    while True:
        while len(r.e2e) < target:
            r.one(True)
            yield Progress("timing", warmup + len(r.e2e), warmup + target, f"run {len(r.e2e)}"
                           + (" (more runs while layers stay noisy)" if target > runs else ""))
        extra_since = extra_since or time.perf_counter()
        if target >= max_runs or time.perf_counter() - extra_since > extra_budget_s or not _still_noisy(r.per_layer):
            break
        target = min(max_runs, target + max(runs // 2, 3))
    other = None if r.cuda else load.share()
    tracker, peak_memory, source = _memory(r, wb, device)
    layers = _layer_timings(r, tracker)
    e_med, e25, e75, _ = _quantiles(r.e2e)
    noisy_ids = tuple(_still_noisy(r.per_layer))
    total_ms = sum(t.latency_ms for t in layers.values())
    summary = TimingSummary(
        device=str(device) + (f" ({torch.cuda.get_device_name(device)})" if r.cuda else ""),
        timer="CUDA events" if r.cuda else "time.perf_counter_ns", runs=len(r.e2e), warmup=warmup, threads=torch.get_num_threads(),
        end_to_end_ms=e_med, end_to_end_p25_ms=e25, end_to_end_p75_ms=e75, sum_of_layer_medians_ms=total_ms,
        glue_ms=statistics.median(r.glue) if r.glue else 0.0, weight_bytes=wb.total, peak_activation_bytes=tracker.peak,
        peak_memory_bytes=peak_memory, peak_memory_source=source, runs_requested=runs, other_load=other, noisy_layers=noisy_ids,
        warnings=_warnings(other, noisy_ids, total_ms / e_med if e_med > 0 else float("nan"), torch.get_num_threads(), len(r.e2e)),
    )
    log.info("timed %d layers: %d runs after %d warm-up on %s, %d threads; end to end %.3f ms (p25 %.3f, p75 %.3f)",
             len(layers), len(r.e2e), warmup, summary.device, summary.threads, e_med, e25, e75)
    for w in summary.warnings:
        log.warning("%s", w)
    return TimingResult(layers, summary)
