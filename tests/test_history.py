"""The experiment history: records, notes, comparisons, concurrent writers, damaged or foreign databases."""

import multiprocessing
import subprocess
import sys

import pytest
from helpers import REQ, SMALL, run

from layerscope.profiler.errors import HistoryError
from layerscope.profiler.history import compare_runs
from layerscope.profiler.history.store import HistoryStore
from layerscope.profiler.progress import drive
from layerscope.profiler.sweep import Budgets, SearchSpace, SweepOptions, run_sweep


# --------------------------------------------------------------------------- history
def test_history_record_note_list_compare_and_cli(tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "h.sqlite")
    monkeypatch.setenv("LAYERSCOPE_HISTORY", db)
    rc, out, err = run(capsys, "profile", "digits_cnn", "--runs", "2", "--warmup", "1", "--hardware", "raspberry-pi-5",
                       "--note", "float baseline")
    assert rc == 0 and "Recorded as history run 1" in out
    rc, out, _ = run(capsys, "compress", "digits_cnn", "--estimate", "palettize4", "--runs", "2", "--warmup", "1",
                     "--hardware", "raspberry-pi-5", "--samples", "1")
    assert rc == 0 and "history run 2" in out
    rc, out, _ = run(capsys, "history", "note", "2", "4-bit palettes")
    rc, out, _ = run(capsys, "history", "--model", "digits")
    assert rc == 0 and "float baseline" in out and "4-bit palettes" in out and "compress" in out
    store = HistoryStore(db)
    a, b = store.run(1), store.run(2)
    assert a.model_hash == b.model_hash and b.plan["specs"][0]["technique"] == "palettize"
    metrics, diffs, only_a, only_b = compare_runs(a, b)
    by_id = {d.layer_id: d for d in diffs}
    assert by_id["conv3"].values["weight_bytes"][0] == 73984 and by_id["conv3"].values["weight_bytes"][1] < 73984 / 4
    assert metrics["size_bytes"][1] < metrics["size_bytes"][0] and not only_a and not only_b
    rc, out, _ = run(capsys, "history", "compare", "1", "2")
    assert rc == 0 and "conv3" in out and "palettize" in out
    rc, _, err = run(capsys, "history", "show", "99")
    assert rc == 2 and "No run 99" in err
    rc, _, err = run(capsys, "profile", "digits_cnn", "--runs", "2", "--hardware", "raspberry-pi-5", "--no-history")
    assert len(store.runs()) == 2


def _writer(db: str, n: int, tag: str) -> None:
    store = HistoryStore(db)
    for i in range(n):
        store.add_run("profile", f"m-{tag}", "h" * 32, metrics={"i": i}, note=tag)


@pytest.mark.slow
def test_history_survives_concurrent_writers(tmp_path):
    db = f"sqlite:///{tmp_path / 'h.sqlite'}"  # a database URL, as a team would give one
    HistoryStore(db)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, 40, tag)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    runs = HistoryStore(db).runs(limit=1000)
    assert len(runs) == 80 and {r.note for r in runs} == {"a", "b"}


def test_corrupt_locked_or_foreign_database_is_a_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(HistoryError, match="damaged or not a database"):
        HistoryStore(str(bad))
    assert bad.read_bytes().startswith(b"not a database")  # never replaced by a new empty one
    import sqlite3

    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("create table invoices (id int)").connection.commit()
    with pytest.raises(HistoryError, match="another program"):
        HistoryStore(str(other))
    from layerscope.profiler.history import store as store_module

    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.3)
    db = tmp_path / "h.sqlite"
    store = HistoryStore(str(db))
    holder = sqlite3.connect(db, timeout=0.1)
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(HistoryError, match="locked"):
        HistoryStore(str(db)).add_run("profile", "m", "h", note="x")
    holder.rollback()
    store.add_run("profile", "m", "h")  # free again
    assert len(store.runs()) == 1
    # a stored profile that is neither zlib nor text is damaged: said, naming the run
    rid = store.add_run("profile", "m", "h", profile_json="{}")
    assert store.profile_json(rid) == "{}"
    with sqlite3.connect(db) as c:
        c.execute("update runs set profile = ? where id = ?", (b"\x00garbage", rid))
    with pytest.raises(HistoryError, match=f"run {rid}'s stored profile is damaged"):
        store.profile_json(rid)
    with sqlite3.connect(db) as c:  # plain text, as written before profiles were compressed
        c.execute("update runs set profile = ? where id = ?", ("{}", rid))
    assert store.profile_json(rid) == "{}"


def test_interrupted_optuna_sweep_resumes_with_its_sampler_seeded(tmp_path):
    space = {**SMALL, "techniques": {"quantize": {"bits": [8, 4, 2]}, "palettize": {"bits": [4, 2]}}}
    opts = SweepOptions(Budgets(max_size_ratio=0.25), SearchSpace.from_dict(space), history=str(tmp_path / "h.sqlite"), ort=False,
                        trials=5, search="optuna")
    work = run_sweep(REQ, opts)
    for p in work:  # stop after two candidates, as Ctrl-C would
        if p.stage == "sweep" and p.done == 2:
            work.close()
            break
    store = HistoryStore(str(tmp_path / "h.sqlite"))
    run_id = store.runs(kind="sweep")[0].id
    assert store.run(run_id).status == "interrupted" and len(store.candidates(run_id)) == 2
    res = drive(run_sweep(REQ, SweepOptions(history=str(tmp_path / "h.sqlite"), resume=run_id)))
    assert res.search == "optuna" and len(res.candidates) == 5 and len({c.label for c in res.candidates}) == 5


def _record(label, size_ratio, top1, lat_ratio, ref_ms=1.0, load=0.0):
    return {"recipe": {"technique": "quantize", "strength": 8, "layers": "all", "keep": 0}, "label": label, "plan": None,
            "metrics": {"size_bytes": int(size_ratio * 1000), "size_ratio": size_ratio, "top1": top1, "top1_reference": 0.9,
                        "top1_drop_points": 100 * (0.9 - top1), "output_sqnr_db": 30.0, "output_cosine": 0.99,
                        "peak_memory_bytes": 10, "targets": {"this": {"latency_ms": lat_ratio * ref_ms, "latency_ms_reference": ref_ms,
                                                                       "latency_ratio": lat_ratio, "measured": True,
                                                                       "other_load": load}}}}


def test_summary_by_hand_binding_budget_noise_and_busy_notes():
    from layerscope.profiler.sweep import summarise

    recs = [_record("a", 0.20, 0.80, 1.0, ref_ms=1.0),  # small but 10 points worse
            _record("b", 0.40, 0.895, 1.0, ref_ms=1.0),  # accurate but large
            _record("c", 0.30, 0.85, 0.9, ref_ms=1.5, load=0.6),  # in between, timed on a busy machine
            _record("d", 0.50, 0.90, 1.1, ref_ms=0.5)]
    b = Budgets(max_size_ratio=0.25, max_top1_drop_points=1.0)
    res = summarise(1, "m", "h", "db", b, True, recs, (), {"top1": 0.9}, "done", "grid")
    assert res.front_size == (1, 3, 2, 4) and not res.passing  # every candidate trades size for accuracy: all on the front
    # each budget alone is met by someone (a: size; b, d: accuracy), never both: the binding one frees the most candidates
    # removing max_size_ratio frees b and d (2), removing max_top1_drop_points frees a (1)
    assert res.binding == ("max_size_ratio",)
    # closest by total relative excess: a (10-1)/1 = 9; b (0.4-0.25)/0.25 = 0.6; c 0.2 + 4 = 4.2; d 1.0 -> b, d, c
    assert res.closest == (2, 4, 3)
    # float-model latency across candidates 1.0, 1.0, 1.5, 0.5: median 1.0, MAD 0.25 -> noise 2 * 1.4826 * 0.25 = 0.74
    assert res.latency_noise == pytest.approx(0.7413)
    assert any("varied by ±74%" in n for n in res.notes) and any("1 candidate(s) were timed while" in n and "#3" in n for n in res.notes)


@pytest.mark.slow
def test_cli_start_up_does_not_load_sqlalchemy():
    """SQLAlchemy (0.25 s of imports) loads only when a database is opened: `layerscope --help`, `zoo` and a
    `profile --no-history` never pay for it."""

    code = "import sys, layerscope.cli.main; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False", out.stderr
