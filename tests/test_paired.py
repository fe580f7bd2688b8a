"""One timing policy for every comparison of two timings (issue 26): paired runs, the ratio with a confidence
interval, and a three-valued verdict that says "within noise" instead of flipping."""

import pytest
import torch
from torch import nn

from layerscope.profiler.paired import FASTER, SLOWER, WITHIN_NOISE, ratio_interval, time_pair, verdict


def test_the_verdict_has_three_values():
    assert verdict(0.5, 0.9) == FASTER and verdict(1.1, 1.4) == SLOWER and verdict(0.9, 1.2) == WITHIN_NOISE


def test_a_change_inside_the_noise_is_within_noise_and_a_clear_one_is_not():
    """Busy-machine runs: the candidate's median is 8 % slower, but the pairs scatter ±30 %, so the interval holds 1;
    comparing the two medians alone would have called it slower."""
    a = [1.0] * 20
    scatter = [0.7, 1.3, 0.75, 1.35, 0.8, 1.25, 1.08, 0.9, 1.2, 1.1, 0.72, 1.31, 1.08, 0.95, 1.28, 1.08, 0.85, 1.15, 1.02, 1.18]
    ratio, low, high = ratio_interval(a, scatter)
    assert sorted(scatter)[10] / 1.0 > 1.0 and low < 1.0 < high and verdict(low, high) == WITHIN_NOISE
    ratio, low, high = ratio_interval(a, [0.5 + 0.01 * (k % 3) for k in range(20)])
    assert high < 1.0 and verdict(low, high) == FASTER and ratio == pytest.approx(0.51, abs=0.01)
    assert ratio_interval(a, scatter) == ratio_interval(a, scatter)  # seeded: the same runs give the same interval


def test_pairs_cancel_what_the_machine_did():
    """A background burst slows both runs of a pair: per-pair ratios stay put where separate medians would not."""
    a = [1.0, 5.0, 1.0, 5.0, 1.0, 5.0, 1.0, 5.0, 1.0, 5.0, 5.0, 5.0]  # every other pair hit by a burst
    b = [0.8 * x for x in a]
    ratio, low, high = ratio_interval(a, b)
    assert ratio == pytest.approx(0.8) and high < 1.0


def test_time_pair_interleaves_and_reads_the_injected_clock():
    """time_pair runs a, b, a, b… and times each on the clock it is given: here each model advances a clock the test
    owns by its own cost (the reference 2 ms, the candidate 1 ms), whatever the machine is doing."""
    calls: list[str] = []
    now = {"ns": 0}

    class Costs(nn.Module):
        def __init__(self, tag: str, ms: float) -> None:
            super().__init__()
            self.tag, self.ns = tag, int(ms * 1e6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(self.tag)
            now["ns"] += self.ns
            return x

    p = time_pair(Costs("a", 2.0), Costs("b", 1.0), (torch.zeros(1),), runs=10, warmup=2, clock=lambda: now["ns"])
    assert calls == ["a", "b"] * 12  # the warm-up pairs, then the timed pairs, interleaved
    assert (p.a_ms, p.b_ms, p.ratio) == (2.0, 1.0, 0.5) and p.verdict == FASTER and "faster" in p.text()


def test_activation_ranges_are_fitted_apart_from_the_samples_they_are_judged_by(tiny, tmp_path):
    """A seeded quarter of the batches fits the ranges, the rest measures output and accuracy; one batch cannot be
    split and says so; --calib-data gives the calibration set."""
    from helpers import plan_of

    from layerscope.profiler import drive
    from layerscope.profiler.compression import apply_plan, resolve_plan
    from layerscope.profiler.files.data import random_samples

    loaded, profile, _ = tiny
    resolved, _ = resolve_plan(plan_of(("type:Conv2d", "quantize", {"bits": 8, "activations": True})), profile)
    samples = random_samples(loaded.inputs, 8)
    calib, evaluation = samples.split_for_calibration()
    assert len(calib.batches) == 2 and len(evaluation.batches) == 6 and samples.split_for_calibration() == (calib, evaluation)
    assert not {id(b) for b in calib.batches} & {id(b) for b in evaluation.batches}
    _, res = drive(apply_plan(loaded.module, profile.graph, resolved, samples))
    assert res.output.samples == evaluation.n_samples and any("fitted on" in w and "measured on" in w for w in res.warnings)
    _, one = drive(apply_plan(loaded.module, profile.graph, resolved, random_samples(loaded.inputs, 1)))
    assert any("one batch cannot be split" in w for w in one.warnings)
    _, given = drive(apply_plan(loaded.module, profile.graph, resolved, samples, calibration=random_samples(loaded.inputs, 1, seed=9)))
    assert given.output.samples == samples.n_samples


def _candidate(label, size_ratio, lat_ratio, low, high):
    return {"recipe": {"technique": "quantize", "strength": 8, "layers": "all", "keep": 0}, "label": label, "plan": None,
            "metrics": {"size_bytes": int(size_ratio * 1000), "size_ratio": size_ratio, "top1": None, "top1_reference": None,
                        "top1_drop_points": None, "output_sqnr_db": 30.0, "output_cosine": 0.99, "peak_memory_bytes": 10,
                        "targets": {"this": {"latency_ms": lat_ratio, "latency_ms_reference": 1.0, "latency_ratio": lat_ratio,
                                             "latency_ratio_low": low, "latency_ratio_high": high, "measured": True,
                                             "other_load": 0.0}}}}


def test_a_sweep_never_fails_a_latency_budget_on_noise_and_prefers_settled_verdicts():
    """max_latency_ratio 1.0: a candidate measured at 1.05× whose interval holds 1.0 is inconclusive, not failed; one
    whose whole interval is above the limit fails; the settled pass is recommended before the unsettled one."""
    from layerscope.profiler.sweep import Budgets, check_budgets, summarise

    budgets = Budgets(max_latency_ratio=1.0)
    noisy = _candidate("noisy", 0.25, 1.05, 0.92, 1.2)
    slow = _candidate("slow", 0.25, 1.3, 1.15, 1.45)
    settled = _candidate("settled", 0.30, 0.8, 0.7, 0.9)
    (check,) = check_budgets(budgets, noisy["metrics"])["this"]
    assert check.ok and check.inconclusive  # comparing the 1.05 median alone would fail it
    assert not check_budgets(budgets, slow["metrics"])["this"][0].ok
    res = summarise(1, "m", "h", "db", budgets, False, [noisy, slow, settled], (), {}, "done", "grid")
    assert [res.by_id(i).label for i in res.passing] == ["settled", "noisy"]  # smaller, but unsettled: after
    assert not res.by_id(1).settled and res.by_id(3).settled
    assert any("only within the timing noise" in n for n in res.notes)
