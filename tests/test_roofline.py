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


def test_calibrate_measures_and_caches(monkeypatch):
    from layerscope.profiler import drive, hardware, resolve_hardware
    from layerscope.profiler.hardware import cache_path

    # A busy or noisy CI machine must not make this test flaky: what is tested here is the cache.
    monkeypatch.setattr(hardware, "MAX_OTHER_LOAD", 1.0)
    monkeypatch.setattr(hardware, "MAX_SPREAD", float("inf"))

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
    from layerscope.profiler.serde import to_jsonable

    m = LayerMetrics(params=0, weight_bytes=0, flops=1000, macs=500, bytes_read=0, bytes_written=0, formula="matmul")
    assert m.arithmetic_intensity is None
    pt = classify(m, 0.001, pi5)
    assert pt.bound.value == "compute-bound" and pt.intensity is None and pt.roof_gflops == pi5.peak_for("float32")[0]
    json.dumps(to_jsonable(pt), allow_nan=False)  # a profile holding it stays valid JSON
