"""Budgets, sweeps, the Pareto front, the history database, and the trade-off report."""

import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import REQ, SMALL, run, sweep

from layerscope.profiler.errors import BudgetError, HistoryError, SweepError
from layerscope.profiler.history.store import HistoryStore
from layerscope.profiler.progress import drive
from layerscope.profiler.request import ModelRequest
from layerscope.profiler.sweep import Budgets, SearchSpace, SweepOptions, check_budgets, knee, pareto_front, run_sweep
from layerscope.profiler.sweep import evaluate as evaluate_mod
from layerscope.profiler.sweep.report import sweep_csv, sweep_html, write_plans


# --------------------------------------------------------------------------- front and knee
def test_pareto_front_and_knee_by_hand():
    # (cost, quality): lower cost and higher quality are better
    pts = [(0.10, 60.0),  # 0: cheapest -> on the front
           (0.20, 90.0),  # 1: on the front
           (0.25, 85.0),  # 2: dominated by 1 (costs more, worse)
           (0.30, 95.0),  # 3: on the front
           (0.60, 96.0),  # 4: on the front (best quality)
           (0.60, 96.0),  # 5: equal to 4 -> kept once (the first)
           (math.nan, 99.0)]  # 6: unmeasured -> never on the front
    assert pareto_front(pts) == [0, 1, 3, 4]
    # knee: scale the front to [0,1]: cost (c-0.1)/0.5, quality (q-60)/36
    #   0 -> (0, 0); 1 -> (0.2, 0.8333); 3 -> (0.4, 0.9722); 4 -> (1, 1)
    # distance to the line y = x: |x - y| / sqrt(2): 1 -> 0.6333/1.414 = 0.448; 3 -> 0.5722/1.414 = 0.405
    assert knee(pts, [0, 1, 3, 4]) == 1
    assert knee(pts, [0, 4]) is None  # two points: no bend
    assert knee([(0, 0), (1, 1), (2, 2)], [0, 1, 2]) is None  # a straight front has no knee


def test_budgets_file_and_checks(tmp_path):
    f = tmp_path / "b.json"
    f.write_text(json.dumps({"max_size_ratio": 0.25, "max_top1_drop_points": 1, "targets": ["this", "raspberry-pi-5"]}))
    b = Budgets.load(str(f)).merged({"min_output_sqnr_db": 20.0})
    assert b.limits() == {"max_size_ratio": 0.25, "max_top1_drop_points": 1.0, "min_output_sqnr_db": 20.0}
    m = {"size_bytes": 2**20, "size_ratio": 0.3, "top1_drop_points": 0.5, "output_sqnr_db": 25.0, "peak_memory_bytes": None,
         "targets": {"this": {"latency_ms": 1.0, "latency_ratio": 0.9}, "raspberry-pi-5": {"latency_ms": 5.0, "latency_ratio": 0.8}}}
    checks = check_budgets(b, m)
    assert [(c.budget, c.ok) for c in checks["this"]] == [("max_size_ratio", False), ("max_top1_drop_points", True),
                                                          ("min_output_sqnr_db", True)]
    assert checks["this"][0].excess == pytest.approx((0.3 - 0.25) / 0.25)  # 20 % over
    for bad, word in (({"max_size": 1}, "unknown key"), ({"max_size_ratio": -1}, "greater than zero"),
                      ({"targets": []}, "targets"), ({"min_output_cosine": 2}, "at most 1")):
        with pytest.raises(BudgetError, match=word):
            Budgets.from_dict(bad)
    from layerscope.profiler.sweep import resolve_targets

    with pytest.raises(BudgetError, match="no-such-device"):
        resolve_targets(("this", "no-such-device"))
    board = tmp_path / "board.json"  # a user's own device profile
    board.write_text(json.dumps({"name": "my NPU", "peak_gflops": {"float32": 500}, "bandwidth_gbs": 30, "source": "datasheet"}))
    this, mine = resolve_targets(("this", str(board)))
    assert this.measured and not mine.measured and mine.hardware.bandwidth_gbs == 30


def test_search_space_validation():
    space = SearchSpace.from_dict(SMALL)
    keys = [r.key for r in space.recipes()]
    # 2 quantize strengths x 2 layer choices + 1 palettize x 2 + 1 mixed = 7, all distinct
    assert len(keys) == 7 == len(set(keys))
    assert "mixed int4 + int8 on 1 most sensitive" in keys
    for bad, word in (({"techniques": {"quantise": {"bits": [8]}}}, "quantise"), ({"layers": ["top:0"]}, "layers"),
                      ({"techniques": {"quantize": {"bits": [9]}}}, "bits"), ({"bogus": 1}, "unknown key")):
        with pytest.raises(BudgetError, match=word):
            SearchSpace.from_dict(bad)


# --------------------------------------------------------------------------- sweeps on digits_cnn (real labelled data)
def test_digits_sweep_meets_a_4x_size_budget_and_reports(tmp_path):
    b = Budgets(max_size_ratio=0.25, max_top1_drop_points=1.0, targets=("this", "raspberry-pi-5"))
    res = sweep(tmp_path, b)
    assert res.quality == "top1" and len(res.candidates) == 7
    assert res.passing, res.why_none
    for cid in res.passing:  # every recommended candidate really meets both budgets, on both targets
        m = res.by_id(cid).metrics
        assert m["size_ratio"] <= 0.25 and m["top1_drop_points"] <= 1.0
        assert m["targets"]["raspberry-pi-5"]["measured"] is False and m["targets"]["this"]["measured"] is True
        # peak memory: compressed weights as stored + the float model's activation peak (weights only changed)
        assert m["size_bytes"] < m["peak_memory_bytes"] < res.reference["peak_memory_bytes"]
    best = res.by_id(res.passing[0])
    assert all(best.metrics["size_ratio"] <= res.by_id(i).metrics["size_ratio"] for i in res.passing)
    # the front holds no dominated candidate
    ok = [c for c in res.candidates if c.ok]
    for cid in res.front_size:
        c = res.by_id(cid)
        assert not any(o.metrics["size_ratio"] < c.metrics["size_ratio"] and o.metrics["top1"] > c.metrics["top1"] for o in ok)
    # sensitivity: every compressible layer ranked once, most sensitive first
    sqnr = [s.output_sqnr_db for s in res.sensitivity]
    assert sorted(s.layer_id for s in res.sensitivity) == ["conv1", "conv2", "conv3", "fc1", "fc2"] and sqnr == sorted(sqnr)
    # outputs: plans (the best one loads as a plan), CSV, self-contained HTML with one dot per candidate per plot
    written, stale = write_plans(res, tmp_path / "plans")
    from layerscope.profiler.compression import CompressionPlan

    assert CompressionPlan.load(tmp_path / "plans" / "best.plan.json").specs == CompressionPlan.from_data(best.plan).specs
    assert len(written) == 7 + 1 and stale == []
    assert len(sweep_csv(res).strip().splitlines()) == 1 + 7
    page = sweep_html(res, str(tmp_path / "plans"))
    assert page.count('class="pt ') == 2 * 7 and "http" not in page.split("<body>")[1].replace("history", "")
    assert best.label in page


def test_impossible_budget_names_the_binding_one(tmp_path):
    res = sweep(tmp_path, Budgets(max_size_ratio=0.01, max_top1_drop_points=1.0),
                space={"techniques": {"quantize": {"bits": [8, 4]}}, "layers": ["all"], "mixed": None})
    assert not res.passing
    assert res.binding == ("max_size_ratio",)  # no candidate is that small; the accuracy budget alone is met
    assert "max_size_ratio 0.01: the best candidate reaches 0.15" in res.why_none
    assert res.closest and res.closest[0] == 2  # int4 comes closest


def test_accuracy_budget_without_labels_is_a_clear_error(tmp_path):
    with pytest.raises(BudgetError, match="needs labelled data"):
        sweep(tmp_path, Budgets(max_top1_drop_points=1.0), req=ModelRequest("tiny_cnn", runs=2, warmup=1, hardware="raspberry-pi-5"))
    assert HistoryStore(str(tmp_path / "h.sqlite")).runs() == []  # nothing half-recorded


def test_optuna_search_under_budget(tmp_path):
    space = {**SMALL, "techniques": {"quantize": {"bits": [8, 4, 2]}, "palettize": {"bits": [4, 2]}, "prune": {"sparsity": [0.5]}}}
    res = sweep(tmp_path, Budgets(max_size_ratio=0.25), space=space, trials=6, search="auto")
    assert res.search == "optuna" and len(res.candidates) == 6
    assert len({c.label for c in res.candidates}) == 6  # no recipe measured twice


@pytest.mark.toolchain
def test_ort_int8_is_measured_for_int8_recipes(tmp_path):
    res = sweep(tmp_path, Budgets(), space={"techniques": {"quantize": {"bits": [8]}}, "layers": ["all"], "mixed": None}, ort=True)
    this = res.by_id(1).metrics["targets"]["this"]
    assert this["ort_int8_ms"] > 0 and this["ort_float_ms"] > 0 and res.by_id(1).runs_in_ort


# --------------------------------------------------------------------------- interruption and resume
@pytest.mark.slow
def test_killed_sweep_resumes_without_measuring_again(tmp_path, monkeypatch):
    db = tmp_path / "h.sqlite"
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SMALL))
    env = {**os.environ, "LAYERSCOPE_HISTORY": str(db)}
    proc = subprocess.Popen([sys.executable, "-m", "layerscope.cli.main", "-q", "sweep", "digits_cnn", "--runs", "3", "--warmup", "1",
                             "--hardware", "raspberry-pi-5", "--space", str(space), "--max-size-ratio", "0.25", "--no-ort"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    done_before = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                runs = HistoryStore(str(db)).runs(kind="sweep")
                done_before = len(HistoryStore(str(db)).candidates(runs[0].id)) if runs else 0
            except HistoryError:
                continue
            if done_before >= 3:
                break
    proc.send_signal(signal.SIGINT)  # Ctrl-C halfway
    proc.wait(60)
    assert proc.returncode == 130, proc.stderr.read().decode()[-800:]
    store = HistoryStore(str(db))
    run_id = store.runs(kind="sweep")[0].id
    kept = store.candidates(run_id)
    assert 3 <= len(kept) < 7 and store.run(run_id).status == "interrupted"
    measured = []
    real = evaluate_mod.Evaluator.evaluate
    monkeypatch.setattr(evaluate_mod.Evaluator, "evaluate", lambda self, r: measured.append(r) or real(self, r))
    res = drive(run_sweep(REQ, SweepOptions(history=str(db), resume=run_id)))
    assert len(measured) == 7 - len(kept)  # only what was missing
    assert len(res.candidates) == 7 and len({c.label for c in res.candidates}) == 7
    assert {r["key"] for r in kept} <= {c.label for c in res.candidates}
    assert store.run(run_id).status == "done" and any("earlier session" in n for n in res.notes)


# --------------------------------------------------------------------------- local pool and Ray
POOL_SPACE = {"techniques": {"quantize": {"bits": [8, 4]}, "palettize": {"bits": [4]}}, "layers": ["all"], "mixed": None}


def _ray_starts() -> str | None:
    try:
        import ray
    except ImportError:
        return "Ray is not installed (pip install 'layerscope[ray]')"
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - any failure to start means: no Ray on this machine
        return f"Ray cannot start on this machine: {exc}"
    ray.shutdown()
    return None


@pytest.mark.toolchain
def test_local_pool_and_ray_record_the_same_candidates(tmp_path):
    pool = sweep(tmp_path / "pool", Budgets(max_size_ratio=0.3), space=POOL_SPACE, workers=2)
    why = _ray_starts()
    if why:
        pytest.skip(why)
    ray_res = sweep(tmp_path / "ray", Budgets(max_size_ratio=0.3), space=POOL_SPACE, workers=2, ray="")
    a = {c.label: c.metrics for c in pool.candidates}
    b = {c.label: c.metrics for c in ray_res.candidates}
    assert set(a) == set(b) and len(a) == 3
    for k in a:  # deterministic numbers agree exactly; only timings differ
        assert a[k]["size_bytes"] == b[k]["size_bytes"] and a[k]["top1"] == b[k]["top1"]
    for d in ("pool", "ray"):
        store = HistoryStore(str(tmp_path / d / "h.sqlite"))
        assert len(store.candidates(store.runs(kind="sweep")[0].id)) == 3


def test_unreachable_ray_address_is_named_and_nothing_lost(tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(SweepError, match="127.0.0.1:9"):
        sweep(tmp_path, Budgets(), space=POOL_SPACE, ray="127.0.0.1:9")
    assert HistoryStore(str(tmp_path / "h.sqlite")).runs(kind="sweep") == []


def test_timing_lock_excludes_other_work(tmp_path):
    lock = evaluate_mod.HostTimingLock(str(tmp_path / "t.lock"))
    ctx = multiprocessing.get_context("spawn")
    holding = ctx.Event()
    release = ctx.Event()
    p = ctx.Process(target=_hold_shared, args=(str(tmp_path / "t.lock"), holding, release))
    p.start()
    assert holding.wait(30)
    t0 = time.perf_counter()
    release_later = __import__("threading").Timer(0.5, release.set)
    release_later.start()
    with lock.exclusive() as waited:  # a timer waits for the other process's compression work to finish
        assert waited >= 0.4 and time.perf_counter() - t0 >= 0.4
    p.join(30)


def _hold_shared(path, holding, release):
    from layerscope.profiler.sweep.evaluate import HostTimingLock

    with HostTimingLock(path).shared():
        holding.set()
        release.wait(30)


def test_sweep_cli_writes_report_plans_and_history(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LAYERSCOPE_HISTORY", str(tmp_path / "h.sqlite"))
    space = tmp_path / "space.json"
    space.write_text(json.dumps(POOL_SPACE))
    budgets = tmp_path / "budgets.json"
    budgets.write_text(json.dumps({"max_size_ratio": 0.25, "max_top1_drop_points": 1, "targets": ["this", "jetson-orin-nano-8gb"]}))
    out_dir = tmp_path / "plans"
    rc, out, err = run(capsys, "sweep", "digits_cnn", "--budgets", str(budgets), "--space", str(space), "--runs", "3", "--warmup", "1",
                       "--hardware", "raspberry-pi-5", "--no-ort", "--html", str(tmp_path / "r.html"), "--csv", str(tmp_path / "r.csv"),
                       "--json", str(tmp_path / "r.json"), "--out", str(out_dir), "--note", "first sweep")
    assert rc == 0, err
    assert "Recommended:" in out and "best.plan.json" in out and "jetson-orin-nano-8gb" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert len(data["candidates"]) == 3 and data["passing"] and data["front_size"]
    assert all("checks" in c and set(c["checks"]) == {"this", "jetson-orin-nano-8gb"} for c in data["candidates"])
    assert (out_dir / "best.plan.json").exists() and (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    rc, out, _ = run(capsys, "compress", "digits_cnn", "--plan", str(out_dir / "best.plan.json"), "--runs", "2",
                     "--hardware", "raspberry-pi-5", "--export-coreml", str(tmp_path / "coreml.json"))
    assert rc == 0 and (tmp_path / "coreml.json").exists()
    rc, out, _ = run(capsys, "history", "show", "1")
    assert rc == 0 and "sweep run #1" in out and "first sweep" in out
    rc, _, err = run(capsys, "sweep", "digits_cnn", "--budgets", str(budgets), "--max-size-ratio", "-1")
    assert rc == 2 and "max_size_ratio" in err


def test_tradeoff_view_click_loads_the_candidate_plan(qtbot, tmp_path):
    from layerscope.app.main_window import MainWindow

    res = sweep(tmp_path, Budgets(max_size_ratio=0.25, max_top1_drop_points=1.0), space=POOL_SPACE)
    win = MainWindow(show_dialogs=False)
    qtbot.addWidget(win)
    dialog = win.show_history(str(tmp_path / "h.sqlite"))  # File → History…: the sweep is listed; Open
    assert dialog.runs and dialog.runs[0].kind == "sweep"
    dialog.select_run(res.run_id)
    with qtbot.waitSignal(win.controller.sweepOpened, timeout=60_000):
        dialog.open_selected()
    qtbot.waitUntil(lambda: win.controller.worker is None)
    view = win.tradeoffs
    assert win.state.sweep.run_id == res.run_id and win.state.profile is not None
    assert len(view.ids) == 3 and view.front.getData()[0] is not None
    pick = res.passing[0]
    item, spot = view.spot_of(pick)
    item.sigClicked.emit(item, [spot], None)  # click the recommended candidate
    plan = res.by_id(pick).plan
    panel = win.compression
    assert win.state.candidate == pick and panel.plan_list.count() == len(plan["specs"])
    assert plan["specs"][0]["technique"] in panel.plan_list.item(0).text() and view.apply_btn.isEnabled()
    view.axis.setCurrentIndex(1)  # quality vs latency: same dots, the other front
    assert len(view.ids) == 3 and view.selected.getData()[0][0] == pytest.approx(
        res.by_id(pick).metrics["targets"]["this"]["latency_ratio"])
    view.target.setCurrentIndex(1)  # colour by the first target alone
    with qtbot.waitSignal(win.controller.compressFinished, timeout=120_000):
        view.apply_candidate()  # measured: every view shows the compressed candidate
    qtbot.waitUntil(lambda: win.controller.worker is None)
    assert win.state.compression is not None and win.state.compression.size_ratio == pytest.approx(
        res.by_id(pick).metrics["size_ratio"])
    notes = _save_note_in_dialog(win, tmp_path)
    assert notes == "good trade-off"


def _save_note_in_dialog(win, tmp_path) -> str:
    dialog = win.show_history(str(tmp_path / "h.sqlite"))
    dialog.table.item(0, 6).setText("good trade-off")
    dialog.save_notes()
    return HistoryStore(str(tmp_path / "h.sqlite")).run(dialog.runs[0].id).note
