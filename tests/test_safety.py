"""Nothing executed, nothing lost: crafted model files, atomic outputs, outputs checked before work,
degenerate inputs and resource guards, work folders that never outlive a run."""

import errno
import json
import os
import threading
from pathlib import Path

import pytest
import torch
from helpers import run
from torch import nn

from layerscope.profiler import HardwareProfile, HardwareProfileError, PlanError, drive, load_model
from layerscope.profiler.errors import InputSpecError, OutputError, ResourceError
from layerscope.profiler.files.safeio import atomic_path, atomic_write_text, check_output_path


def _work_folders() -> list[Path]:
    from layerscope.profiler.files.workspace import work_root

    return sorted(work_root().iterdir()) if work_root().is_dir() else []


# --------------------------------------------------------------------------- atomic outputs
def test_atomic_path_keeps_the_old_file_on_any_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_bytes(b"OLD GOOD CONTENT")
    with pytest.raises(OutputError, match="existing file is unchanged"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"NEW, HALF")
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(KeyboardInterrupt):  # Ctrl+C mid-write
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"NEW, HALF")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"OLD GOOD CONTENT"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary left behind
    atomic_write_text(target, "NEW")
    assert target.read_text() == "NEW" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


@pytest.mark.slow
def test_every_output_kind_is_written_atomically(capsys, tmp_path, monkeypatch):
    """Every writer goes through atomic_path: spy on the final rename of each output kind; then let
    the disk fail after the data are written and check every old file survives byte for byte."""
    from layerscope.profiler.files import safeio

    outs = {flag: tmp_path / name for flag, name in [
        ("--json", "report.json"), ("--save-plan", "plan.json"), ("--export-ort", "ort.json"),
        ("--export-coreml", "coreml.json"), ("--export-torchao", "ao.json"), ("--out", "model.pt2"), ("--onnx", "model.onnx")]}
    flags = [a for flag, p in outs.items() for a in (flag, str(p))]
    renamed: list[tuple[Path, Path]] = []
    real_replace = os.replace
    monkeypatch.setattr(safeio.os, "replace", lambda a, b: (renamed.append((Path(a), Path(b))), real_replace(a, b))[1])
    compress = ["compress", "digits_cnn", "--estimate", "int8", "--runs", "2", "--hardware", "raspberry-pi-5", "--samples", "1"]
    profile = ["profile", "tiny_cnn", "--runs", "1", "--hardware", "raspberry-pi-5", "--json", str(tmp_path / "p.json"),
               "--csv", str(tmp_path / "p.csv")]
    assert run(capsys, *compress, *flags)[0] == 0 and run(capsys, *profile)[0] == 0
    outs.update({"--json (profile)": tmp_path / "p.json", "--csv": tmp_path / "p.csv"})
    renamed = [(src, dst) for src, dst in renamed if dst.parent == tmp_path]  # (ORT renames work files of its own)
    assert {dst for _, dst in renamed} == set(outs.values())
    assert all(src.parent == dst.parent and src.name.startswith(f".{dst.stem}.") for src, dst in renamed)
    old = {p: p.read_bytes() for p in outs.values()}

    def full_disk(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safeio.os, "fsync", full_disk)
    for argv in (compress + flags, profile):
        rc, _, err = run(capsys, *argv)
        assert rc == 2 and "No space left on device; the existing file is unchanged" in err, err
    for path, data in old.items():
        assert path.read_bytes() == data, path
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_a_pt2_writer_dying_mid_write_leaves_the_old_file(tmp_path, monkeypatch):
    from layerscope.profiler.capture.export import save_pt2

    m = load_model("tiny_cnn")
    target = tmp_path / "model.pt2"
    save_pt2(m.module, m.inputs, target)
    good = target.read_bytes()

    def dies(ep, path, **_kw):
        Path(path).write_bytes(good[:1000])  # a truncated archive, then the disk is full
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch.export, "save", dies)
    with pytest.raises(OutputError, match="unchanged"):
        save_pt2(m.module, m.inputs, target)
    assert target.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["model.pt2"]


def test_unwritable_output_folders(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.json", "--json")
    with pytest.raises(OutputError, match="is a folder"):
        check_output_path(tmp_path, "--json")
    with pytest.raises(OutputError, match="not a folder"):
        check_output_path(tmp_path / "afile" / "x.json", "--json")
    with pytest.raises(OutputError, match="free"):
        check_output_path(tmp_path / "big.pt2", "--out", size_bytes=2**62)

    def read_only(*_a, **_k):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("layerscope.profiler.files.safeio.tempfile.mkstemp", read_only)
    with pytest.raises(OutputError, match="Read-only file system"):
        check_output_path(tmp_path / "x.json", "--json")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write"):
            check_output_path(ro / "x.json", "--json")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("argv", [
    ["profile", "tiny_cnn", "--json", "{missing}/p.json"],
    ["profile", "tiny_cnn", "--csv", "{file}/p.csv"],
    ["onnx", "tiny_cnn", "--json", "{missing}/o.json"],
    ["compress", "tiny_cnn", "--estimate", "fp16", "--out", "{missing}/m.pt2"],
    ["compress", "tiny_cnn", "--estimate", "fp16", "--onnx", "{missing}/m.onnx"],
    ["compare", "tiny_cnn", "--plan", "{plan}", "--json", "{missing}/c.json"],
    ["sweep", "tiny_cnn", "--html", "{missing}/r.html"],
    ["sweep", "tiny_cnn", "--csv", "{file}/r.csv"],
])
def test_output_paths_are_checked_before_any_work(capsys, tmp_path, monkeypatch, argv):
    import layerscope.profiler.request as request

    def no_work(*_a, **_k):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(request, "load_model", no_work)  # every command loads its model through ModelRequest.load
    (tmp_path / "afile").write_text("x")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "specs": [{"select": "all", "technique": "cast", "params": {}}]}))
    argv = [a.format(missing=tmp_path / "missing", file=tmp_path / "afile", plan=plan) for a in argv]
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and ("does not exist" in err or "not a folder" in err) and "exporter" not in err


# --------------------------------------------------------------------------- hardware numbers and the cache
@pytest.mark.parametrize("doc, why", [
    ('{"name": "x", "peak_gflops": {"float32": NaN}, "bandwidth_gbs": 1, "source": "s"}', "not a number JSON allows"),
    ('{"name": "x", "peak_gflops": {"float32": null}, "bandwidth_gbs": 1, "source": "s"}', "must be a number"),
    ('{"name": "x", "peak_gflops": {"float32": "inf"}, "bandwidth_gbs": 1, "source": "s"}', "must be a number"),
    ('{"name": "x", "peak_gflops": {"float32": 1e999}, "bandwidth_gbs": 1, "source": "s"}', "finite"),
    ('{"name": "x", "peak_gflops": {"float32": 100}, "bandwidth_gbs": 0, "source": "s"}', "greater than zero"),
    ('{"name": "x", "peak_gflops": {}, "bandwidth_gbs": 1, "source": "s"}', "at least one dtype"),
    ('{"name": "x", "peak_gflops": {"float32": 1}, "bandwidth_gbs": 1, "source": "s", "kind": "guess"}', "measured or datasheet"),
])
def test_hardware_numbers_must_be_finite_and_positive(tmp_path, doc, why):
    from layerscope.profiler import load_device_profile

    f = tmp_path / "hw.json"
    f.write_text(doc)
    with pytest.raises(HardwareProfileError, match=why):
        load_device_profile(str(f))
    with pytest.raises(HardwareProfileError):
        HardwareProfile("x", {"float32": float("nan")}, 10.0, "code can't build one either")


_CURRENT = {"calibration": "3"}  # the calibration method whose caches are kept (hardware.CALIBRATION_VERSION)


def _fake_calibration(calls):
    from layerscope.profiler.progress import Progress

    def calibrate(device="cpu", **_kw):
        calls.append(device)
        yield Progress("calibrate", 1, 1, "fake")
        return HardwareProfile("fake (this machine)", {"float32": 500.0}, 50.0, "test", device=device, details=_CURRENT)

    return calibrate


@pytest.mark.fresh_cache
@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"[" * 5000 + b"]" * 5000, b'{"name": "x", "peak_gflops": '
                                     b'{"float32": null}, "bandwidth_gbs": 40, "source": "s"}', b"{", "folder"])
def test_a_corrupt_cache_is_moved_aside_and_measured_again(monkeypatch, content):
    from layerscope.profiler import hardware

    path = hardware.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if content == "folder":
        path.mkdir()
    else:
        path.write_bytes(content)
    calls: list[str] = []
    monkeypatch.setattr(hardware.calibration, "calibrate", _fake_calibration(calls))
    hw = drive(hardware.resolve_hardware(None))
    assert calls == ["cpu"] and hw.peak_gflops == {"float32": 500.0}
    assert any("moved to" in n and "re-measured" in n for n in hw.notes)
    assert [p for p in path.parent.iterdir() if ".bad-" in p.name]
    assert hardware.load_cached()[0] == HardwareProfile("fake (this machine)", {"float32": 500.0}, 50.0, "test", details=_CURRENT)
    assert drive(hardware.resolve_hardware(None)).notes == () and calls == ["cpu"]  # now cached


@pytest.mark.slow
@pytest.mark.fresh_cache
def test_a_busy_calibration_is_provisional_and_a_clean_one_replaces_it(monkeypatch, capsys):
    """A roof that stays put: the first calibration on a busy machine is kept as provisional (said so) and used by the
    next runs instead of measuring again; a busy measurement never replaces a clean one; a clean one replaces the
    provisional one."""
    from layerscope.profiler import hardware

    monkeypatch.setattr(hardware.calibration.OtherLoad, "share", lambda self: 0.6)
    hw = drive(hardware.resolve_hardware(None))
    assert hw.notes and "busy" in hw.notes[0] and "60%" in hw.notes[0] and "provisional roof" in hw.notes[-1]
    assert not hardware.cache_path().exists() and hardware.provisional_path().is_file()
    calls: list[str] = []
    real = hardware.calibration.calibrate
    monkeypatch.setattr(hardware.calibration, "calibrate", _fake_calibration(calls))
    again = drive(hardware.resolve_hardware(None))  # the next run on the busy machine: the same roof, not measured again
    assert calls == [] and again.peak_gflops == hw.peak_gflops and "provisional roof" in again.notes[-1]
    monkeypatch.setattr(hardware.calibration, "calibrate", real)
    rc, out, _ = run(capsys, "calibrate", "--size", "256")  # busy again: the provisional roof stays as it was
    assert rc == 0 and "not cached" in out and not hardware.cache_path().exists()
    assert drive(hardware.resolve_hardware(None)).peak_gflops == hw.peak_gflops
    monkeypatch.setattr(hardware.calibration, "calibrate", _fake_calibration(calls))
    clean = drive(hardware.resolve_hardware(None, recalibrate=True))  # on request, on a quiet machine
    assert clean.notes == () and hardware.cache_path().is_file() and not hardware.provisional_path().exists()
    assert drive(hardware.resolve_hardware(None)).peak_gflops == {"float32": 500.0} and calls == ["cpu"]
    monkeypatch.setattr(hardware.calibration.OtherLoad, "share", lambda self: 0.6)
    monkeypatch.setattr(hardware.calibration, "calibrate", real)
    rc, out, _ = run(capsys, "calibrate", "--size", "256")  # a busy measurement never replaces the clean roof
    assert rc == 0 and "not cached" in out and hardware.load_cached()[0].peak_gflops == {"float32": 500.0}


@pytest.mark.fresh_cache
def test_a_calibration_from_another_torch_is_measured_again(monkeypatch):
    from layerscope.profiler import hardware

    stale = HardwareProfile("old", {"float32": 1.0}, 1.0, "test", details={**_CURRENT, "torch": "1.0.0"})
    path = hardware.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(stale.to_json())
    calls: list[str] = []
    monkeypatch.setattr(hardware.calibration, "calibrate", _fake_calibration(calls))
    hw = drive(hardware.resolve_hardware(None))
    assert calls == ["cpu"] and any("measured under torch 1.0.0" in n for n in hw.notes)


@pytest.mark.parametrize("size", ["0", "-1", "100000"])
def test_calibrate_sizes_out_of_range(capsys, size):
    rc, _, err = run(capsys, "calibrate", "--size", size)
    assert rc == 2 and "out of range" in err


# --------------------------------------------------------------------------- degenerate inputs
def test_degenerate_data_are_errors(tmp_path):
    import numpy as np

    from layerscope.profiler.files.data import load_data_folder

    like = (torch.zeros(1, 1, 8, 8),)
    empty, nan = tmp_path / "empty", tmp_path / "nan"
    empty.mkdir()
    nan.mkdir()
    np.savez(empty / "b0.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    x = np.zeros((4, 1, 8, 8), np.float32)
    x[1, 0, 2, 2] = np.nan
    np.savez(nan / "b0.npz", x=x)
    with pytest.raises(InputSpecError, match="no samples"):
        load_data_folder(empty, like)
    with pytest.raises(InputSpecError, match="1 NaN/Inf"):
        load_data_folder(nan, like)
    from layerscope.profiler.errorstats import PairStats

    assert PairStats().sqnr_db != PairStats().sqnr_db  # nothing compared: NaN, never "exact"


@pytest.mark.parametrize("selector, why", [("top:-1", "N >= 1"), ("top:0", "N >= 1"), ("top:x", "integer"),
                                          (r"re:(a)\1", "RE2"), ("re:(", "bad regular expression")])
def test_bad_selectors(tiny_profile, selector, why):
    from layerscope.profiler.compression import CompressionPlan, LayerSpec, resolve_plan

    with pytest.raises(PlanError, match=why):
        resolve_plan(CompressionPlan((LayerSpec(selector, "quantize", {"bits": 8}),)), tiny_profile)


def test_a_catastrophic_regex_cannot_hang_selection(tiny_profile):
    from layerscope.profiler.compression import CompressionPlan, LayerSpec, resolve_plan

    result: list = []

    def select():
        try:
            resolve_plan(CompressionPlan((LayerSpec("re:^(.|.|.)*!$", "quantize", {"bits": 8}),)), tiny_profile)
        except PlanError as exc:
            result.append(exc)

    t = threading.Thread(target=select, daemon=True)
    t.start()
    t.join(60)  # backtracking on these ids would take longer than the universe; RE2 takes microseconds
    assert not t.is_alive() and "matches no layer" in str(result[0])


@pytest.mark.parametrize("device, why", [("meta", "--device meta has no values to time: add --static"), ("garbage", "is not a device"),
                                         ("mps", "cpu or cuda")])
def test_unknown_or_meaningless_devices(capsys, device, why):
    rc, _, err = run(capsys, "profile", "tiny_cnn", "--device", device)
    assert rc == 2 and why in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_names_the_real_cause(capsys):
    rc, _, err = run(capsys, "profile", "tiny_cnn", "--device", "cuda")
    assert rc == 2 and "CUDA" in err and "calibrate" not in err


def test_absurd_and_oversized_inputs_are_refused_before_allocation(capsys):
    rc, _, err = run(capsys, "profile", "resnet18", "--input-shape", "1,3,100000,100000")
    assert rc == 2 and "example inputs alone take 111.8 GiB" in err
    rc, _, err = run(capsys, "profile", "resnet18", "--input-shape", "1,3,4000,4000", "--max-memory", "1")
    assert rc == 2 and "activation memory" in err and "1.0 GiB is available" in err
    rc, _, err = run(capsys, "profile", "tiny_cnn", "--input-shape", "1," + "9" * 5000)
    assert rc == 2 and "input-shape" in err
    with pytest.raises(ResourceError):
        load_model("resnet18", [(1, 3, 4000, 4000)], max_memory_bytes=2**30)
    load_model("resnet18", [(1, 3, 64, 64)], max_memory_bytes=0)  # 0 turns the check off


def test_the_memory_estimate_leaves_the_model_untouched():
    from layerscope.profiler.resources import estimate_activation_bytes

    class Caching(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.cache = {}

        def forward(self, x):
            key = str(x.device)
            if key not in self.cache:  # the LeViT pattern: a per-device cache filled in forward
                self.cache[key] = torch.ones(8)
            self.last = x
            return self.fc(x) + self.cache[key]

    m = Caching()
    est = estimate_activation_bytes(m, [((64, 8), torch.float32)])
    assert est is not None and est >= 64 * 8 * 4  # at least the linear's output
    assert m.cache == {} and not hasattr(m, "last")
    assert m(torch.randn(2, 8)).shape == (2, 8) and isinstance(m.cache["cpu"], torch.Tensor)


def test_an_onnx_file_declaring_huge_inputs(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 100000, 100000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 100000, 100000])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "huge.onnx")
    rc, _, err = run(capsys, "onnx", str(tmp_path / "huge.onnx"), "--runs", "1")
    assert rc == 2 and "declares inputs x (1, 3, 100000, 100000)" in err


def test_a_forward_that_raises_is_named_as_such(capsys, factory_py):
    rc, _, err = run(capsys, "onnx", f"{factory_py}:forward_raises", "--runs", "1")
    assert rc == 2 and "this forward always fails" in err and "control flow" not in err
