"""Nothing lost, nothing overwritten: work folders that never outlive a run, output files and folders LayerScope
may write, inert names in every output, and the guards the input probe found missing."""

import json
import os
import threading
from pathlib import Path

import pytest
import torch
from helpers import run
from torch import nn

from layerscope.profiler.errors import LayerScopeError, ResourceError


def _work_folders() -> list[Path]:
    from layerscope.profiler.files.workspace import work_root

    return sorted(work_root().iterdir()) if work_root().is_dir() else []

def _work_folders() -> list[Path]:
    from layerscope.profiler.files.workspace import work_root

    return sorted(work_root().iterdir()) if work_root().is_dir() else []



# --------------------------------------------------------------------------- work folders
@pytest.mark.toolchain
def test_no_work_folder_outlives_onnx_or_ort_int8(capsys, tmp_path):
    rc, out, _ = run(capsys, "onnx", "tiny_cnn", "--runs", "1")
    assert rc == 0 and "work files removed" in " ".join(out.split()) and _work_folders() == []
    rc, _, _ = run(capsys, "compress", "digits_cnn", "--estimate", "int8", "--runs", "2", "--hardware", "raspberry-pi-5", "--samples", "1")
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

    import patterns_inputs

    spec = f"{Path(patterns_inputs.__file__)}:odd_names"
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
    rc, _, err = run(capsys, "profile", f"{Path(patterns_inputs.__file__)}:quoted_name", "--runs", "1", "--hardware", "raspberry-pi-5",
                     "--no-history")
    assert rc == 2 and "named 'blocks.a\"b'" in err and "--static" in err
    rc, _, err = run(capsys, "profile", f"{Path(patterns_inputs.__file__)}:quoted_name", "--static", "--hardware", "raspberry-pi-5",
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
                       "--no-history", "--samples", "1")
    assert rc == 0 and "ONNX Runtime int8 was not measured: it needs about" in " ".join(out.split()), err
