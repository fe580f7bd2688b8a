"""The small numbers the app shows are computed in the core (issue 25), each checked here by hand."""

import types

import numpy as np
import pytest

from layerscope.profiler import HardwareProfile
from layerscope.profiler.compression import LayerDelta, estimate_static, resolve_plan
from layerscope.profiler.compression.apply import OutputChange
from layerscope.profiler.runtimes.onnx import OnnxProfile


def test_accuracy_points_are_the_top1_change_in_points_when_labelled():
    change = OutputChange(60, "digits", 40.0, 0.999, 0.01, accuracy_reference=0.95, accuracy_candidate=0.9375)
    assert change.accuracy_points == pytest.approx(-1.25)
    assert OutputChange(8, "random", 40.0, 0.999, 0.01, None, None).accuracy_points is None


def test_latency_change_is_after_minus_before_when_both_were_timed():
    d = LayerDelta("conv1", "quantize", 2.0, 1.25, 100, 100, 40, 10)
    assert d.latency_change_ms == pytest.approx(-0.75)
    assert LayerDelta("conv1", "", None, 1.0, 1, 1, 1, 1).latency_change_ms is None  # a static reference timed nothing
    assert LayerDelta("conv1", "prune", 1.0, None, 1, None, 1, 0).latency_change_ms is None  # gone from the candidate


def test_the_slower_roof_is_the_lower_bandwidth_up_to_the_compute_peak():
    hw = HardwareProfile("m", {"float32": 100.0}, 20.0, "test", bandwidths_gbs={"copy": 20.0, "read": 10.0})
    name, xs, ys = hw.slower_roof(np.array([1.0, 5.0, 9.0, 10.0, 50.0]))
    assert name == "read" and list(xs) == [1.0, 5.0, 9.0]  # at 10 FLOP/B, 10 GB/s meets the 100 GFLOP/s peak
    assert list(ys) == [10.0, 50.0, 90.0]
    assert HardwareProfile("m", {"float32": 100.0}, 20.0, "test").slower_roof(np.array([1.0])) is None


def test_ort_vs_eager_splits_by_eager_shares_and_has_no_ratio_without_an_eager_time():
    fake = types.SimpleNamespace(layer_latency_ms=lambda weights: {"a": 0.5, "b": 0.3, "c": 0.2})
    both = OnnxProfile.ort_vs_eager(fake, ["a", "b", "c", "d"], {"a": 1.0, "b": 0.0})
    assert both["a"] == (0.5, 0.5) and both["b"] == (0.3, None)  # eager took no time: no ratio
    assert both["c"] == (0.2, None) and both["d"] == (None, None)  # not timed in eager / nothing ran in ORT


def test_the_selection_estimate_sums_the_chosen_layers(tiny_profile):
    from helpers import plan_of

    resolved, _ = resolve_plan(plan_of(("all", "quantize", {"bits": 8})), tiny_profile)
    est = estimate_static(tiny_profile, resolved)
    chosen = [e.layer_id for e in est.layers][:2]
    s = est.selection(chosen)
    sel = [e for e in est.layers if e.layer_id in chosen]
    assert s.layers == 2 and s.weight_bytes_before == sum(e.weight_bytes_before for e in sel)
    assert s.weight_bytes_after == sum(e.weight_bytes_after for e in sel) < s.weight_bytes_before
    assert s.flops_after == sum(e.flops_after or 0 for e in sel)
    assert s.roof_ms_after == pytest.approx(sum(e.roof_ms_after or 0 for e in sel))
    ib = sorted(e.intensity_before for e in sel if e.intensity_before)
    assert s.median_intensity_before == ib[len(ib) // 2]
    assert est.selection([]).layers == 0 and est.selection([]).median_intensity_before is None


def test_compress_no_ort_skips_the_measurement_and_refuses_to_export_what_it_skipped(capsys, tmp_path):
    from helpers import run

    rc, out, _ = run(capsys, "compress", "tiny_cnn", "--estimate", "int8", "--no-ort", "--runs", "1", "--hardware",
                     "raspberry-pi-5", "--no-history")
    assert rc == 0 and "ONNX Runtime int8" not in out and "Size:" in out
    rc, _, err = run(capsys, "compress", "tiny_cnn", "--estimate", "int8", "--no-ort", "--export-ort", str(tmp_path / "o.json"))
    assert rc == 2 and "--no-ort" in err and not (tmp_path / "o.json").exists()


def test_one_rank_order_when_busy_the_table_and_the_cli_show_what_ranks(tiny_profile, qtbot):
    """On a busy machine the ranking is by the 25th percentile; the app's latency column and the CLI's show (and the
    table sorts by) that statistic, and say so, so "Slowest top k" picks what the table puts on top."""
    import dataclasses

    from PySide6.QtCore import Qt

    from layerscope.app.table import LATENCY_COLUMN, LayerTableModel
    from layerscope.cli.common import InertConsole
    from layerscope.cli.main import print_profile
    from layerscope.profiler.timing import BUSY_LOAD

    def at_load(load):
        return dataclasses.replace(tiny_profile, summary=dataclasses.replace(tiny_profile.summary, other_load=load))

    quiet, busy = at_load(0.0), at_load(BUSY_LOAD + 0.3)
    assert (quiet.rank_statistic, busy.rank_statistic) == ("median", "p25")
    timed = [r for r in busy.ranked() if r.timing is not None]
    assert [busy.rank_ms(r) for r in timed] == sorted((r.timing.p25_ms for r in timed), reverse=True)
    model = LayerTableModel()
    for profile, header in ((quiet, "Latency ms"), (busy, "Latency p25 ms (busy)")):
        model.set_profile(profile)
        assert model.headers()[LATENCY_COLUMN] == header
        model.sort(LATENCY_COLUMN, Qt.SortOrder.DescendingOrder)
        on_top = [model.layer_at(i) for i in range(len(timed))]
        assert on_top == [r.layer.id for r in profile.ranked()][:len(timed)]
    console = InertConsole(record=True, width=200)
    print_profile(busy, 3, console)
    text = console.export_text()
    assert "latency p25 ms" in text and "25th percentile: the machine was busy" in text


def test_a_theoretical_peak_below_the_measured_one_says_it_is_a_floor():
    from layerscope.profiler.hardware.calibration import _theory_text

    assert _theory_text((157.0, "AVX2+FMA: … x 2.45 GHz x 2 threads"), 178.5).endswith("so this is a floor, not a ceiling")
    assert "1.14x" in _theory_text((157.0, "x"), 178.5)
    assert _theory_text((200.0, "x"), 178.5) == "200 GFLOP/s (x)"
