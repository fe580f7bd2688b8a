import csv
import io
import math

import pytest
import torch

from layerscope.profiler import Bound, Profile, ProfileFormatError, drive, load_model, profile_model
from layerscope.profiler.profile import CSV_COLUMNS


def test_profile_has_measured_numbers(tiny_profile):
    p = tiny_profile
    assert len(p.graph) == 9 and p.model.capture_method.value == "torch.fx"
    assert all(t.latency_ms > 0 and t.p25_ms <= t.latency_ms <= t.p75_ms for t in p.timings.values())
    s = p.summary
    assert s.runs_requested == 3 and s.runs >= 3 and s.warmup == 1 and s.end_to_end_ms > 0  # more runs while a layer stays noisy
    assert math.isfinite(s.fidelity) and 0.2 < s.fidelity < 5
    assert s.peak_memory_bytes == s.weight_bytes + s.peak_activation_bytes
    # conv1's output 1x16x32x32 float32 is newly allocated activation memory
    assert p.timings["conv1"].output_bytes == 16 * 32 * 32 * 4
    assert p.model.total_params == 5466
    ranked = p.ranked()
    assert ranked[0].timing.latency_ms >= ranked[-1].timing.latency_ms
    assert sum(r.latency_share for r in p.rows()) == pytest.approx(1.0)
    assert p.roofline["conv2"].bound in (Bound.MEMORY, Bound.COMPUTE)


def test_json_round_trip_is_exact(tiny_profile, tmp_path):
    text = tiny_profile.to_json()
    again = Profile.from_json(text)
    assert again == tiny_profile and again.to_json() == text
    path = tmp_path / "p.json"
    tiny_profile.save(path)
    assert Profile.load(path) == tiny_profile


def test_bad_profile_files(tmp_path):
    with pytest.raises(ProfileFormatError, match="not valid JSON"):
        Profile.from_json("{", "x.json")
    with pytest.raises(ProfileFormatError, match="schema_version"):
        Profile.from_json('{"schema_version": 99}', "x.json")


def test_csv_export(tiny_profile):
    rows = list(csv.DictReader(io.StringIO(tiny_profile.to_csv())))
    assert list(rows[0]) == CSV_COLUMNS and len(rows) == len(tiny_profile.graph)
    conv1 = next(r for r in rows if r["layer"] == "conv1")
    assert int(conv1["macs"]) == 16 * 32 * 32 * 3 * 9


def test_pt2_source(tmp_path):
    from layerscope.profiler import load_device_profile
    from layerscope.profiler.files.zoo import build_zoo_model

    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(build_zoo_model("tiny_cnn"), (torch.randn(1, 3, 32, 32),)), str(path))
    p = drive(profile_model(load_model(str(path)), load_device_profile("raspberry-pi-5"), runs=1, warmup=0))
    assert p.model.capture_method.value == "torch.export" and p.model.source_kind == "pt2"
    assert p.metrics["conv1"].macs == 16 * 32 * 32 * 3 * 9 and p.graph["conv1"].op_kind == "conv"
    assert p.graph["bn1"].op_kind == "batch_norm"  # a subclass (BatchNorm2d) resolved from its class name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_timing_uses_events():
    from layerscope.profiler import load_device_profile

    p = drive(profile_model(load_model("tiny_cnn"), load_device_profile("raspberry-pi-5"), runs=2, device="cuda"))
    assert p.summary.timer == "CUDA events" and "cuda" in p.summary.device


def test_a_suspended_or_cancelled_profile_leaves_no_inference_mode_behind(pi5):
    # A generator suspended inside `with torch.inference_mode()` leaves it on for its thread; a GUI
    # worker thread reused after Cancel then broke Torch-Pruning ("module not in the dependency graph").
    from layerscope.profiler import load_model, profile_model

    work = profile_model(load_model("tiny_cnn"), pi5, runs=3, warmup=1)
    for p in work:
        assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled(), p
        if p.stage == "timing":
            break
    work.close()  # what Cancel does
    assert not torch.is_inference_mode_enabled()


def test_model_request_checks_itself_and_reloads_a_profile(tiny_profile):
    from layerscope.profiler import LayerScopeError
    from layerscope.profiler.jobs import ModelRequest

    for bad in (dict(runs=0), dict(warmup=-1), dict(capture="jit"), dict(max_memory_gib=-1.0), dict(device="meta")):
        with pytest.raises(LayerScopeError):
            ModelRequest("tiny_cnn", **bad).check()
    req = ModelRequest.for_profile(tiny_profile, runs=4)
    assert (req.model, req.runs, req.max_memory_gib) == (tiny_profile.model.spec, 4, 0)
    loaded = req.load()
    assert [tuple(t.shape) for t in loaded.inputs] == [tuple(s) for s in tiny_profile.model.input_shapes]
    assert ModelRequest(capture="export").method.value == "torch.export" and ModelRequest().method is None


def test_unknown_layer_is_a_key_error_naming_it(tiny_profile):
    with pytest.raises(KeyError, match="no layer 'nope'"):
        tiny_profile.row("nope")
    assert tiny_profile.row("conv2").layer.id == "conv2"


def test_a_layer_hit_by_noise_is_flagged_timed_longer_and_kept_out_of_the_headline(monkeypatch):
    """A test double for the clock: every node takes 0.5 ms in every run (deterministic under any load),
    except layer "fc", which gets +20 ms in 6 runs of 10. Its median jumps and its spread explodes: it
    must be flagged, timed longer, and not lead the headline."""
    import itertools

    from layerscope.profiler import HardwareProfile, drive, load_model, profile_model, timing

    real = timing._NodeTimer.elapsed_ms
    runs = itertools.count()

    def delayed(self):
        k = next(runs)
        return {node: 0.5 + (20.0 if node == "fc" and k % 10 in (1, 3, 5, 7, 8, 9) else 0.0) for node in real(self)}

    monkeypatch.setattr(timing._NodeTimer, "elapsed_ms", delayed)
    monkeypatch.setattr(timing.OtherLoad, "share", lambda self: 0.0)  # a quiet machine: rank by the median
    hw = HardwareProfile("test (this machine)", {"float32": 100.0}, 10.0, "s")
    p = drive(profile_model(load_model("tiny_cnn"), hw, runs=10, warmup=1))
    s = p.summary
    assert "fc" in s.noisy_layers and s.runs > s.runs_requested == 10  # more runs were taken while it stayed noisy
    assert any("stayed noisy" in w and "fc" in w for w in s.warnings)
    assert p.ranked(1)[0].layer.id == "fc"  # by median alone the noise leads...
    assert "fc" not in [r.layer.id for r in p.ranked(3, steady_only=True)]  # ...the headline leaves it out


def test_threads_are_honoured_and_restored():
    import torch

    from layerscope.profiler import drive
    from layerscope.profiler.jobs import ModelRequest, profile_job

    before = torch.get_num_threads()
    p = drive(profile_job(ModelRequest("tiny_cnn", runs=2, warmup=1, hardware="raspberry-pi-5", threads=1)))
    assert p.summary.threads == 1 and torch.get_num_threads() == before


@pytest.mark.skipif(__import__("torch").get_num_threads() < 2, reason="needs more than one torch thread")
def test_a_busy_machine_is_timed_at_one_thread_and_says_so(monkeypatch):
    """One thread policy for every timing job: profile and compress (the app's Apply runs compress_job) alike."""
    from layerscope.profiler import drive, paired
    from layerscope.profiler.compression import estimate_plan
    from layerscope.profiler.jobs import ModelRequest, compress_job, profile_job

    monkeypatch.setattr(paired, "other_load_now", lambda seconds=0.3: 0.9)
    p = drive(profile_job(ModelRequest("tiny_cnn", runs=2, warmup=1, hardware="raspberry-pi-5")))
    assert p.summary.threads == 1 and "timed at 1 thread" in p.summary.warnings[0]
    q = drive(profile_job(ModelRequest("tiny_cnn", runs=2, warmup=1, hardware="raspberry-pi-5", threads=2)))
    assert q.summary.threads == 2  # an explicit --threads is never overridden
    r = drive(compress_job(ModelRequest("tiny_cnn", runs=3, warmup=1, hardware="raspberry-pi-5"), estimate_plan("int8")))
    assert r.latency.threads == 1 and r.reference.summary.threads == 1 and "timed at 1 thread" in r.warnings[0]


def test_static_profile_counts_without_timing_and_round_trips():
    from layerscope.profiler.jobs import ModelRequest, profile_job

    p = drive(profile_job(ModelRequest("tiny_cnn", hardware="raspberry-pi-5", static=True)))
    assert p.static and p.timings == {} and p.summary.runs == 0 and p.total_flops > 0
    assert [r.layer.id for r in p.ranked(3)] == [r.layer.id for r in sorted(p.rows(), key=lambda r: -(r.metrics.flops or 0))[:3]]
    assert all(pt.roof_fraction is None for pt in p.roofline.values()) and p.bound_counts()[Bound.COMPUTE] > 0
    timed = drive(profile_model(load_model("tiny_cnn"), p.hardware, runs=1, warmup=0))
    # the static peak comes from the captured shapes and matches what a real run measures on live storages
    assert p.summary.peak_activation_bytes == timed.summary.peak_activation_bytes == timed.graph.activation_peak_bytes() > 0
    again = Profile.from_json(p.to_json())
    assert again.static and again.total_macs == p.total_macs
    groups = p.totals_by("type")  # a static profile's totals rank by FLOPs, with shares of FLOPs
    assert [g.flops for g in groups] == sorted((g.flops for g in groups), reverse=True)
    assert sum(g.flops_share for g in groups) == pytest.approx(1.0) and groups[0].share(static=True) == groups[0].flops_share


def test_a_busy_profile_ranks_by_the_fast_quarter_of_runs():
    """Preemption only adds time: on a busy machine the 25th percentile ranks, not the median."""
    import dataclasses

    from layerscope.profiler import HardwareProfile
    from layerscope.profiler.timing import LayerTiming

    p = drive(profile_model(load_model("tiny_cnn"), HardwareProfile("t (this machine)", {"float32": 100.0}, 10.0, "s"),
                            runs=2, warmup=1))
    a, b = [r.layer.id for r in p.ranked(2)]
    # a: slower median but a fast quarter; b: steady. Quiet machine ranks a first, a busy one b.
    # every other layer far below both (their real timings, taken on a loaded CI machine, once reached 5 ms)
    timings = {**{lid: LayerTiming(0.01, 0.01, 0.01, 0.01, 0, 0) for lid in p.timings},
               a: LayerTiming(9.0, 1.0, 12.0, 0.9, 0, 0), b: LayerTiming(5.0, 4.9, 5.1, 4.8, 0, 0)}
    total = sum(t.latency_ms for t in timings.values())
    quiet = dataclasses.replace(p, timings=timings, summary=dataclasses.replace(p.summary, sum_of_layer_medians_ms=total, other_load=0.0))
    busy = dataclasses.replace(quiet, summary=dataclasses.replace(quiet.summary, other_load=0.8))
    assert quiet.ranked(1)[0].layer.id == a and busy.ranked(1)[0].layer.id == b
