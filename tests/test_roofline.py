import pytest
import torch
from helpers import metrics_of
from torch import nn

from layerscope.profiler import Bound, HardwareProfile, HardwareProfileError, classify, load_device_profile
from layerscope.profiler.hardware import device_profile_names

HW = HardwareProfile("test device", {"float32": 1000.0}, 100.0, "made up for the test", kind="datasheet")  # ridge 10 FLOP/B


class MM(nn.Module):
    def forward(self, a, b):
        return a @ b


class Add(nn.Module):
    def forward(self, a, b):
        return a + b


def test_big_matmul_is_compute_bound_and_add_memory_bound():
    _, mm = metrics_of(MM(), torch.randn(2048, 2048), torch.randn(2048, 2048))
    # 2*2048^3 FLOPs over 3*2048^2*4 bytes = 341 FLOP/B >> ridge 10
    assert mm.arithmetic_intensity == pytest.approx(2 * 2048**3 / (3 * 2048**2 * 4))
    assert classify(mm, 20.0, HW).bound is Bound.COMPUTE
    _, add = metrics_of(Add(), torch.randn(1024, 1024), torch.randn(1024, 1024))
    assert add.arithmetic_intensity == pytest.approx(1 / 12)  # 1 FLOP per 12 bytes
    assert classify(add, 1.0, HW).bound is Bound.MEMORY


def test_roof_fraction_only_for_timings_taken_on_the_target():
    _, mm = metrics_of(MM(), torch.randn(256, 256), torch.randn(256, 256))
    ms = mm.flops / 500e9 * 1e3  # runs at 500 GFLOP/s = half the 1000 GFLOP/s roof
    p = classify(mm, ms, HW, timed_on_target=True)
    assert p.attained_gflops == pytest.approx(500) and p.roof_fraction == pytest.approx(0.5)
    assert classify(mm, ms, HW, timed_on_target=False).roof_fraction is None


def test_ridge_point_and_shipped_profiles():
    assert HW.ridge_point() == 10.0
    names = device_profile_names()
    assert {"raspberry-pi-5", "jetson-orin-nano-8gb", "apple-m2-gpu"} <= set(names)
    for name in names:
        hw = load_device_profile(name)
        assert hw.kind == "datasheet" and hw.source and hw.bandwidth_gbs > 0
    pi = load_device_profile("raspberry-pi-5")
    assert pi.peak_gflops["float32"] == pytest.approx(4 * 2.4 * 16)  # 4 cores x 2.4 GHz x 16 FLOP/cycle


def test_bad_profiles_are_clear_errors(tmp_path):
    with pytest.raises(HardwareProfileError, match="Unknown device profile 'pi9'"):
        load_device_profile("pi9")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "peak_gflops": {"float32": -1}, "bandwidth_gbs": 1, "source": "s"}')
    with pytest.raises(HardwareProfileError, match="greater than zero"):
        load_device_profile(str(bad))


@pytest.mark.fresh_cache
def test_calibrate_measures_and_caches(monkeypatch):
    from layerscope.profiler import drive, resolve_hardware
    from layerscope.profiler.hardware import cache_path, calibration

    # A busy or noisy CI machine must not make this test flaky: what is tested here is the cache.
    monkeypatch.setattr(calibration, "MAX_OTHER_LOAD", 1.0)
    monkeypatch.setattr(calibration, "MAX_SPREAD", float("inf"))
    monkeypatch.setattr(calibration._Timing, "steady", property(lambda self: True))

    hw = drive(resolve_hardware(None))  # XDG cache is a temp dir (conftest)
    assert hw.kind == "measured" and hw.peak_gflops["float32"] > 0 and hw.bandwidth_gbs > 0
    assert cache_path().is_file()
    assert drive(resolve_hardware(None)) == hw  # second call reads the cache


def test_one_roof_for_classes_plot_and_estimate(pi5):
    """The roof at an intensity and the fastest time it allows have one home: HardwareProfile."""
    import numpy as np

    peak, bw = pi5.peak_for("float32")[0], pi5.bandwidth_gbs
    assert pi5.roof_gflops(1.0) == pytest.approx(min(peak, bw))
    assert pi5.roof_gflops(float("inf")) == peak  # no bytes moved: the compute roof
    xs = np.array([0.1, pi5.ridge_point(), 1e4])
    assert np.allclose(pi5.roof_gflops(xs), [0.1 * bw, peak, peak])
    assert pi5.roof_ms(2e9, 0) == pytest.approx(2e9 / (peak * 1e9) * 1e3)
    assert pi5.roof_ms(0, 4e9) == pytest.approx(4e9 / (bw * 1e9) * 1e3)


def test_flops_that_move_no_bytes_are_compute_bound_without_infinity(pi5):
    import json

    from layerscope.profiler import LayerMetrics, classify
    from layerscope.profiler.files.serde import to_jsonable

    m = LayerMetrics(params=0, weight_bytes=0, flops=1000, macs=500, bytes_read=0, bytes_written=0, formula="matmul")
    assert m.arithmetic_intensity is None
    pt = classify(m, 0.001, pi5)
    assert pt.bound.value == "compute-bound" and pt.intensity is None and pt.roof_gflops == pi5.peak_for("float32")[0]
    json.dumps(to_jsonable(pt), allow_nan=False)  # a profile holding it stays valid JSON


def test_a_layer_faster_than_the_roof_is_flagged_not_printed_as_a_plain_number():
    _, mm = metrics_of(MM(), torch.randn(256, 256), torch.randn(256, 256))
    hw = HardwareProfile("low roof", {"float32": 1.0}, 100.0, "a calibration that read low")  # measured kind
    # 2*256^3 = 33,554,432 FLOPs in 10 ms = 3.36 GFLOP/s against a 1 GFLOP/s peak: 336 % of roof
    p = classify(mm, 10.0, hw)
    assert p.bound is Bound.COMPUTE and p.roof_fraction == pytest.approx(3.3554432)
    assert p.above_roof and p.roof_text() == "336% !"
    ok = classify(mm, 10.0, HardwareProfile("roof", {"float32": 10.0}, 100.0, "s"))
    assert not ok.above_roof and ok.roof_text() == "34%"  # 3.36 GFLOP/s of min(10 peak, 42.7 FLOP/B x 100 GB/s) = 34 %


def test_profile_warns_when_layers_beat_the_roof(monkeypatch):
    from layerscope.profiler import drive, load_model, profile_model

    hw = HardwareProfile("far too low (this machine)", {"float32": 0.01}, 0.01, "a roof no CPU is below")
    profile = drive(profile_model(load_model("tiny_cnn"), hw, runs=2, warmup=1))
    assert profile.above_roof() and all(profile.roofline[lid].above_roof for lid in profile.above_roof())
    warning = profile.roof_warning()
    assert "faster than the roof allows" in warning and "layerscope calibrate" in warning


def test_cache_aware_roof_judges_a_layer_by_the_working_set_it_fits():
    hw = HardwareProfile("cpu", {"float32": 1000.0}, 20.0, "s", cache_bandwidths_gbs={str(2 * 2**20): 200.0, str(64 * 2**20): 40.0})
    assert hw.bandwidth_for(None) == 20.0 and hw.bandwidth_for(2**20) == 200.0  # fits the 2 MiB level
    # between the levels, log-linear: log2(8 / 2) / log2(64 / 2) = 2/5 of the way from 200 to 40 GB/s
    assert hw.bandwidth_for(8 * 2**20) == pytest.approx(200 + (40 - 200) * 2 / 5)
    assert hw.bandwidth_for(64 * 2**20) == 40.0 and hw.bandwidth_for(2**30) == 20.0  # the last level; beyond: DRAM
    _, add = metrics_of(Add(), torch.randn(256, 256), torch.randn(256, 256))  # 3 x 256 KiB = 768 KiB moved
    # 65,536 FLOPs, 786,432 bytes: roof = (65,536 / 786,432) x 200 GB/s = 16.7 GFLOP/s, not 1.67 at DRAM speed
    assert classify(add, 0.01, hw).roof_gflops == pytest.approx(65536 / 786432 * 200)
    with pytest.raises(HardwareProfileError, match="cache_bandwidths_gbs"):
        HardwareProfile("cpu", {"float32": 1.0}, 1.0, "s", cache_bandwidths_gbs={"L2": 10.0})


def test_calibration_measures_blas_and_onednn_kernels_copy_read_and_caches():
    from layerscope.profiler import drive
    from layerscope.profiler.hardware import calibrate

    hw = drive(calibrate(copy_mib=8, budget_s=0.02))
    kernels = {k for k in hw.details if k.startswith("kernel float32")}
    assert any("BLAS" in k for k in kernels) and sum("oneDNN" in k for k in kernels) == 2
    peaks = [float(hw.details[k].split()[0]) for k in kernels]
    assert hw.peak_gflops["float32"] == pytest.approx(max(peaks), rel=1e-2)  # the roof is the fastest kernel
    assert set(hw.bandwidths_gbs) == {"copy", "read"} and hw.bandwidth_gbs == max(hw.bandwidths_gbs.values())
    assert set(hw.cache_bandwidths_gbs) == {str(2 * 2**20), str(4 * 2**20), str(8 * 2**20)}  # copies of 1, 2, 4 MiB (< 8)


@pytest.mark.fresh_cache
def test_a_calibration_whose_best_is_a_one_off_is_not_cached(monkeypatch):
    from layerscope.profiler import drive, hardware
    from layerscope.profiler.hardware import calibration

    real = calibration._best_of

    def one_off(fn, sync, budget_s, min_reps=3, max_reps=1000):
        t = real(fn, sync, budget_s, min_reps, max_reps)
        return calibration._Timing(t.best, t.median * 3, near_best=1)  # the best was reached once

    real_calibrate = calibration.calibrate
    monkeypatch.setattr(calibration, "_best_of", one_off)
    monkeypatch.setattr(calibration.OtherLoad, "share", lambda self: 0.0)  # a quiet machine: only the spread is wrong
    monkeypatch.setattr(calibration, "calibrate", lambda device="cpu", **kw: real_calibrate(device, copy_mib=8, budget_s=0.01))
    hw = drive(hardware.resolve_hardware(None))
    assert hw.notes and "within 10% of the best" in hw.notes[0]
    assert not hardware.cache_path().exists()


def test_the_cached_roof_keeps_the_best_of_clean_calibrations():
    from layerscope.profiler.hardware import merge_best

    det = {"host": "h", "threads": "2", "calibration": "3"}
    a = HardwareProfile("m", {"float32": 150.0}, 30.0, "s", details=det, cache_bandwidths_gbs={"2097152": 90.0})
    b = HardwareProfile("m", {"float32": 180.0}, 20.0, "s", details=det, cache_bandwidths_gbs={"2097152": 100.0})
    m = merge_best(a, b)
    assert m.peak_gflops == {"float32": 180.0} and m.bandwidth_gbs == 30.0 and m.cache_bandwidths_gbs == {"2097152": 100.0}
    assert m.details["calibrations kept"] == "2"
    other_threads = HardwareProfile("m", {"float32": 90.0}, 10.0, "s", details={**det, "threads": "1"})
    assert merge_best(a, other_threads) is other_threads  # another thread count: a different roof
