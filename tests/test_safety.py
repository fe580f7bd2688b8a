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
from layerscope.profiler.errors import InputSpecError, LayerScopeError, OutputError, ResourceError
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
    compress = ["compress", "digits_cnn", "--estimate", "int8", "--runs", "2", "--hardware", "raspberry-pi-5"]
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
def test_a_calibration_on_a_busy_machine_is_not_cached(monkeypatch, capsys):
    from layerscope.profiler import hardware

    monkeypatch.setattr(hardware.calibration.OtherLoad, "share", lambda self: 0.6)
    hw = drive(hardware.resolve_hardware(None))
    assert hw.notes and "busy" in hw.notes[0] and "60%" in hw.notes[0]
    assert not hardware.cache_path().exists()
    rc, out, _ = run(capsys, "calibrate", "--size", "256")
    assert rc == 0 and "not cached" in out and not hardware.cache_path().exists()


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
    rc, _, err = run(capsys, "onnx", f"{factory_py}:raises", "--runs", "1")
    assert rc == 2 and "this forward always fails" in err and "control flow" not in err


# --------------------------------------------------------------------------- work folders
@pytest.mark.toolchain
def test_no_work_folder_outlives_onnx_or_ort_int8(capsys, tmp_path):
    rc, out, _ = run(capsys, "onnx", "tiny_cnn", "--runs", "1")
    assert rc == 0 and "work files removed" in " ".join(out.split()) and _work_folders() == []
    rc, _, _ = run(capsys, "compress", "digits_cnn", "--estimate", "int8", "--runs", "2", "--hardware", "raspberry-pi-5")
    assert rc == 0 and _work_folders() == []
    keep = tmp_path / "keep"
    rc, out, _ = run(capsys, "onnx", "tiny_cnn", "--runs", "1", "--workdir", str(keep))
    assert rc == 0 and any(p.name.endswith(".opt.onnx") for p in keep.iterdir()) and "kept in" in out


def test_leftovers_of_a_killed_run_are_swept(monkeypatch):
    from layerscope.profiler.files import workspace

    root = workspace.work_root()
    dead = root / "onnx-999999999-deadbeef"  # no such process
    dead.mkdir(parents=True)
    (dead / "model.onnx").write_bytes(b"x" * 1000)
    with workspace.work_dir("onnx") as mine:
        assert mine.is_dir() and not dead.exists()
    assert not mine.exists()


@pytest.mark.slow
@pytest.mark.parametrize("command, sig, code", [
    (["onnx", "resnet18", "--runs", "400"], "SIGINT", 130),
    (["onnx", "resnet18", "--runs", "400"], "SIGTERM", 143),
    (["compress", "resnet18", "--estimate", "int8", "--runs", "2", "--samples", "16", "--hardware", "raspberry-pi-5"],
     "SIGINT", 130),
])
def test_interrupted_runs_leave_no_work_folder(tmp_path, command, sig, code):
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "layerscope.cli.main", "-q", *command], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = tmp_path / "cache" / "layerscope" / "work"
    try:
        deadline = time.monotonic() + 300
        while not (root.is_dir() and any(any(d.iterdir()) for d in root.iterdir())):  # a folder with files in it
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the work folder never appeared"
            time.sleep(0.1)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err.decode()
    assert b"Traceback" not in err
    assert list(root.iterdir()) == []


# --------------------------------------------------------------------------- no user file overwritten unasked
def test_an_output_folder_must_be_new_empty_or_layerscopes_own(capsys, tmp_path):
    """--workdir, --model-explorer and sweep --out refuse a folder of the user's that holds files, naming
    them, before any work; --force writes into it; a folder LayerScope made (its manifest) is reused."""
    mine = tmp_path / "my_results"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work")
    (mine / "model.onnx").write_text("my own model")
    for argv in (["onnx", "tiny_cnn", "--runs", "1", "--workdir", str(mine)],
                 ["profile", "tiny_cnn", "--static", "--no-history", "--model-explorer", str(mine)],
                 ["compress", "tiny_cnn", "--estimate", "fp16", "--samples", "1", "--workdir", str(mine)],
                 ["sweep", "tiny_cnn", "--max-size-ratio", "0.5", "--out", str(mine)]):
        rc, _, err = run(capsys, *argv)
        assert rc == 2 and "holds files LayerScope did not write (model.onnx, thesis.tex)" in err and "--force" in err, err
    assert (mine / "model.onnx").read_text() == "my own model" and sorted(p.name for p in mine.iterdir()) == ["model.onnx", "thesis.tex"]
    rc, _, err = run(capsys, "onnx", "tiny_cnn", "--runs", "1", "--workdir", str(mine), "--force")
    assert rc == 0, err
    assert (mine / "thesis.tex").read_text() == "months of work" and (mine / ".layerscope-manifest.json").is_file()
    rc, _, err = run(capsys, "onnx", "tiny_cnn", "--runs", "1", "--workdir", str(mine))  # now it is LayerScope's too
    assert rc == 0, err
    new = tmp_path / "new" / "deeper"
    rc, _, err = run(capsys, "onnx", "tiny_cnn", "--runs", "1", "--workdir", str(new))
    assert rc == 2 and "does not exist" in err


def test_a_rerun_replaces_only_its_own_files_and_leaves_no_stale_plan(tmp_path):
    from layerscope.profiler.files.safeio import OutputFolder

    folder = tmp_path / "plans"
    with OutputFolder(folder, "--out") as out:
        for i in range(5):
            (out / f"candidate-{i:03d}.plan.json").write_text(str(i))
    (folder / "notes.txt").write_text("the user's own note, added later")
    with OutputFolder(folder, "--out") as out:  # a smaller sweep into the same folder
        for i in range(2):
            (out / f"candidate-{i:03d}.plan.json").write_text(f"new {i}")
    assert sorted(p.name for p in folder.iterdir()) == [".layerscope-manifest.json", "candidate-000.plan.json",
                                                        "candidate-001.plan.json", "notes.txt"]
    with pytest.raises(KeyboardInterrupt), OutputFolder(folder, "--out") as out:  # an interrupted run removes nothing
        (out / "candidate-000.plan.json").write_text("half")
        raise KeyboardInterrupt
    assert (folder / "candidate-001.plan.json").read_text() == "new 1"
    assert OutputFolder(folder, "--out").path == folder  # and the folder is still LayerScope's


def test_a_forged_manifest_cannot_make_layerscope_delete_outside_its_folder(tmp_path):
    from layerscope.profiler.files.safeio import MANIFEST, OutputFolder

    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "link").symlink_to(outside)
    (folder / MANIFEST).write_text(json.dumps({"written_by": "layerscope", "files": ["../precious.txt", str(outside), "link"]}))
    with OutputFolder(folder, "--out"):
        pass
    assert outside.read_text() == "keep" and (folder / "link").is_symlink()


def test_an_output_that_is_one_of_the_inputs_is_refused_before_work(capsys, tmp_path):
    rc, _, err = run(capsys, "profile", "tiny_cnn", "--static", "--no-history", "--json", str(tmp_path / "p.json"))
    assert rc == 0, err
    before = (tmp_path / "p.json").read_bytes()
    rc, _, err = run(capsys, "report", str(tmp_path / "p.json"), "-o", str(tmp_path / "p.json"))
    assert rc == 2 and "is the PROFILE file this command reads" in err
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "specs": [{"select": "all", "technique": "cast", "params": {"dtype": "float16"}}]}))
    rc, _, err = run(capsys, "compress", "tiny_cnn", "--plan", str(plan), "--json", str(tmp_path / "." / "plan.json"))
    assert rc == 2 and "is the --plan file this command reads" in err
    assert (tmp_path / "p.json").read_bytes() == before and json.loads(plan.read_text())["version"] == 1


# --------------------------------------------------------------------------- inert names
def test_names_are_printed_as_text_and_csv_cells_are_not_formulas(capsys, tmp_path):
    """A layer named '[/]' crashed rich's table and '[link=…]' made a live link; a terminal escape in a name
    drove the terminal; '=SUM(…)' ran in a spreadsheet. Now all are text."""
    import csv as csvmod

    import patterns

    spec = f"{Path(patterns.__file__)}:odd_names"
    from layerscope.cli.main import main

    for extra in ([], ["--static"], ["--capture", "export"]):
        rc = main(["-q", "profile", spec, "--runs", "2", "--hardware", "raspberry-pi-5", "--no-history", *extra,
                   "--csv", str(tmp_path / "p.csv")])
        out, err = capsys.readouterr()
        assert rc == 0, err
        assert "\x1b" not in out and "\\x1b[31mred" in out  # the escape is shown, never sent
        assert "[link=http:e-vil]" in out
        assert "[/]" in out and "=SUM(1+1)" in out and "x@y" in out
        rows = list(csvmod.reader((tmp_path / "p.csv").open()))
        layers = {r[0] for r in rows[1:]}
        assert "'=SUM(1+1)" in layers and "'@x" in layers and "x@y" in layers, layers  # OWASP: a leading quote
    rc, _, err = run(capsys, "profile", f"{Path(patterns.__file__)}:quoted_name", "--runs", "1", "--hardware", "raspberry-pi-5",
                     "--no-history")
    assert rc == 2 and "named 'blocks.a\"b'" in err and "--static" in err
    rc, _, err = run(capsys, "profile", f"{Path(patterns.__file__)}:quoted_name", "--static", "--hardware", "raspberry-pi-5",
                     "--no-history")
    assert rc == 0, err


def test_an_error_naming_a_crafted_file_is_text(capsys, tmp_path):
    name = tmp_path / "[bold red]x[link=e]\x1b[2J.pt2"
    name.write_bytes(b"not a zip")
    rc, out, err = run(capsys, "profile", str(name), "--static")
    assert rc == 2 and "[bold red]x[link=e]" in err and "\x1b" not in err and "\\x1b[2J" in err


# --------------------------------------------------------------------------- guards the probe found missing
def test_bad_search_space_values_are_one_clean_error_each(tmp_path, capsys):
    from layerscope.profiler.sweep.space import SearchSpace

    bad = [{"mixed": {"bits": ["4"]}}, {"mixed": {"bits": 4}}, {"mixed": {"bits": [None]}}, {"mixed": {"keep_int8": [1.5]}},
           {"mixed": {"keep_int8": [[1]]}}, {"mixed": "x"}, {"sensitivity": "x"}, {"sensitivity": {"bits": "4"}},
           {"sensitivity": {"bits": 1e400}}, {"sensitivity": {"technique": ["q"]}}, {"mixed": {"bits": [True]}},
           {"techniques": {"quantize": {"bits": [None]}}}, {"techniques": {"quantize": {"bits": [[8]]}}},
           {"techniques": {"prune": {"sparsity": ["x"]}}}, {"techniques": {"quantize": {"bits": [1e308]}}},
           {"mixed": {"bits": [4], "keep_int8": [10**30]}}]
    for space in bad:
        with pytest.raises(LayerScopeError):
            SearchSpace.from_dict(space)
    (tmp_path / "space.json").write_text(json.dumps(bad[0]))
    rc, _, err = run(capsys, "sweep", "tiny_cnn", "--space", str(tmp_path / "space.json"), "--max-size-ratio", "0.5")
    assert rc == 2 and "mixed.bits must be a list of whole numbers" in err


def test_history_survives_damaged_rows_odd_ids_odd_notes_and_wildcards(tmp_path, capsys, monkeypatch):

    from layerscope.profiler.history.store import HistoryStore

    db = tmp_path / "h.sqlite"
    monkeypatch.setenv("LAYERSCOPE_HISTORY", str(db))
    store = HistoryStore(str(db))
    good = store.add_run("profile", "100%_model", "h" * 32, metrics={"latency_ms": 1.5}, note="ok")
    bad = store.add_run("profile", "other", "g" * 32, metrics={"latency_ms": 2.0})
    with store.engine.begin() as c:  # another program (or a crash) damaged a row
        c.exec_driver_sql("UPDATE runs SET metrics = '{not json', plan = '[1, 2]' WHERE id = ?", (bad,))
    rc, out, err = run(capsys, "history")
    assert rc == 0 and "damaged (plan, metrics)" in " ".join(out.split()) and "1.5 ms" in out, err
    rc, out, err = run(capsys, "history", "show", str(bad))
    assert rc == 0 and "damaged" in out
    for run_id in ("99999999999999999999", "0", "-3"):
        rc, _, err = run(capsys, "history", "show", run_id)
        assert rc == 2 and "No run" in err, err
    for note in ("\x1b[2J", "x" * 5000, "a\x00b"):
        rc, _, err = run(capsys, "history", "note", str(good), note)
        assert rc == 2 and "note" in err, err
    assert store.run(good).note == "ok"
    rc, out, _ = run(capsys, "history", "--model", "%")  # LIKE's wildcards are matched as themselves
    assert rc == 0 and "100%_model" in out and "other" not in out
    rc, out, _ = run(capsys, "history", "--model", "_")
    assert rc == 0 and "100%_model" in out and "other" not in out
    for url in ("sqlite://", "sqlite:///:memory:"):  # nothing recorded there would survive: warned (profile), refused (sweep)
        rc, _, err = run(capsys, "profile", "tiny_cnn", "--static", "--history", url)
        assert rc == 0 and "not recorded in the history" in err and "in-memory" in err, err
        rc, _, err = run(capsys, "sweep", "tiny_cnn", "--max-size-ratio", "0.5", "--history", url)
        assert rc == 2 and "in-memory" in err, err


def test_sweep_workers_are_capped_by_cores_and_memory(monkeypatch):
    from layerscope.profiler.sweep import runner

    cores = len(os.sched_getaffinity(0))
    n, note = runner.worker_limit(cores + 30, 1 << 20)
    assert n == cores and f"--workers {cores + 30} was capped at {cores}: this machine has {cores} core(s)" in note
    monkeypatch.setattr(runner, "available_memory_bytes", lambda: 1 << 30)
    n, note = runner.worker_limit(max(cores, 2), 1 << 30)  # 1 GiB free, ~3.4 GiB per worker
    assert n == 1 and "of memory is free" in note
    assert runner.worker_limit(1, 1 << 20) == (1, None)


@pytest.mark.toolchain
def test_ray_address_that_is_not_a_ray_head_is_one_clean_error_within_10_s():
    import socket
    import threading
    import time

    pytest.importorskip("ray")
    from layerscope.profiler.errors import SweepError
    from layerscope.profiler.sweep.backends import check_ray_address

    def serve(answer: bytes) -> int:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)

        def loop():
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                conn.recv(1024)
                conn.sendall(answer)
                threading.Timer(30, conn.close).start()
        threading.Thread(target=loop, daemon=True).start()
        return srv.getsockname()[1]

    http = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    h2 = serve(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # speaks HTTP/2 (a SETTINGS frame) but is no Ray head
    for port, says in ((http, "not as a Ray head"), (h2, "did not answer as a Ray head")):
        start = time.monotonic()
        with pytest.raises(SweepError, match=says):
            check_ray_address(f"127.0.0.1:{port}")
        assert time.monotonic() - start < 10


def test_the_python_api_checks_activation_memory_and_ort_int8_its_peak(capsys, monkeypatch):
    import layerscope
    from layerscope.profiler.compression import pipeline

    model = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 1024))
    with pytest.raises(ResourceError, match="activation memory"):
        layerscope.profile(model, torch.randn(20_000, 1024), static=True, max_memory_gib=0.05)  # an 80 MiB input
    monkeypatch.setattr(pipeline, "available_memory_bytes", lambda: 64 << 10)
    rc, out, err = run(capsys, "compress", "digits_cnn", "--estimate", "int8", "--runs", "1", "--hardware", "raspberry-pi-5",
                       "--no-history")
    assert rc == 0 and "ONNX Runtime int8 was not measured: it needs about" in " ".join(out.split()), err
