"""``layerscope sweep``: search compression recipes under budgets; ``layerscope history``: the
experiment database (list, show, note, compare)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from layerscope.profiler.files.safeio import atomic_write_text
from layerscope.profiler.format import fmt_bytes, fmt_db
from layerscope.profiler.history import compare_runs
from layerscope.profiler.jobs import sweep_job
from layerscope.profiler.request import ModelRequest
from layerscope.profiler.sweep import BUDGET_KEYS, Budgets, SearchSpace, SweepOptions, SweepResult, load_sweep
from layerscope.profiler.sweep.report import sweep_csv, sweep_html, write_plans

from .common import FORCE_HELP, InertConsole, add_data_arguments, check_before_work, request_for, run_work, styled

if TYPE_CHECKING:
    from layerscope.profiler.history.store import HistoryStore

__all__ = ["add_sweep_parser", "add_history_parser", "print_sweep"]

OUTPUTS = {"html": "--html", "csv": "--csv", "json": "--json"}
MIB = 2**20


def _budgets(args: argparse.Namespace) -> Budgets:
    base = Budgets.load(args.budgets) if args.budgets else Budgets()
    flags = {k: getattr(args, k, None) for k in BUDGET_KEYS if k != "targets"}
    if args.target:
        flags["targets"] = args.target
    return base.merged(flags)


def _fmt(v, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def print_sweep(result: SweepResult, console: Console, top: int = 20) -> None:
    ref = result.reference
    b = result.budgets
    console.print(styled((result.model, "bold"), f"  sweep run #{result.run_id} ({result.status}, {result.search} search), "
                         f"{len(result.candidates)} candidates; float model {fmt_bytes(ref.get('size_bytes', 0))}, "
                         f"{_fmt(ref.get('latency_ms'))} ms" + (f", top-1 {100 * ref['top1']:.2f}%" if ref.get("top1") is not None else "")))
    console.print(f"Budgets: {b.text()}; targets: {', '.join(b.targets)} (device targets: roofline estimates)")
    for n in result.notes:
        console.print(styled("  ", ("note:", "yellow"), f" {n}"))
    if result.sensitivity:
        console.print("Sensitivity (one layer at a time, most sensitive first): " + ", ".join(
            f"{s.layer_id} {fmt_db(s.output_sqnr_db)}" for s in result.sensitivity[:6]) + (" …" if len(result.sensitivity) > 6 else ""))
    quality = "top-1 %" if result.quality == "top1" else "SQNR dB"
    table = Table(title="Candidates: recommended (meet every budget) first, then the Pareto fronts, then the rest", title_justify="left")
    for col in ("#", "recipe", "size", "size ×", "latency ×", "ORT int8 ms", quality, "front", *[f"{t}" for t in b.targets]):
        table.add_column(col, justify="left" if col in ("recipe", "front") else "right", overflow="fold")
    front = set(result.front_size) | set(result.front_latency)
    order = list(result.passing) + [i for i in sorted(front) if i not in result.passing]
    order += [c.id for c in result.candidates if c.id not in order]
    order = [i for i in order if result.by_id(i).ok]
    for cid in order[:top]:
        c = result.by_id(cid)
        m = c.metrics or {}
        this = m["targets"].get(result.latency_target(), {})
        q = m.get("top1")
        qtext = _fmt(100 * q, ".2f") if result.quality == "top1" and q is not None else fmt_db(m.get("output_sqnr_db"))
        tags = ("size " if c.id in result.front_size else "") + ("latency" if c.id in result.front_latency else "")
        if c.id in (result.knee_size, result.knee_latency):
            tags += " knee"
        marks = [styled(("✓", "green"), *((("~", "yellow"),) if not c.settled else ())) if c.passes(t)
                 else styled(("✗", "red"), " " + ", ".join(c.failed(t))) for t in b.targets]  # ~: within the timing noise
        table.add_row(("★ " if cid in result.passing[:1] else "") + str(c.id), c.label, fmt_bytes(m["size_bytes"]),
                      _fmt(m["size_ratio"]), _fmt(this.get("latency_ratio"), ".2f"), _fmt(this.get("ort_int8_ms")), qtext,
                      tags.strip(), *marks)
    if len(order) > top:
        table.add_row("", f"… {len(order) - top} more (--top, --csv or --html for all)", *[""] * (6 + len(b.targets)))
    console.print(table)
    for c in result.candidates:
        if not c.ok:
            why = c.error or ""
            console.print(styled((f"  #{c.id} {c.label}: not applicable: {why[:200]}{'…' if len(why) > 200 else ''}", "dim")),
                          highlight=False)
    if result.passing:
        best = result.by_id(result.passing[0])
        console.print(styled(("Recommended:", "bold green"), f" #{best.id} {best.label}; {len(result.passing)} candidate(s) meet every "
                             f"budget (per target: {', '.join(f'{t} {len(ids)}' for t, ids in result.per_target.items())})"))
    elif result.why_none:
        console.print(styled((result.why_none, "bold red")))
    for axis, knee in (("size", result.knee_size), ("latency", result.knee_latency)):
        if knee is not None:
            console.print(f"Knee of the quality-vs-{axis} front: #{knee} {result.by_id(knee).label}")


def cmd_sweep(args: argparse.Namespace) -> int:
    check_before_work(args, OUTPUTS, {"out": "--out"})
    budgets = _budgets(args)  # bad budgets and spaces fail before any work
    space = SearchSpace.load(args.space)
    req = request_for(args)
    opts = SweepOptions(budgets, space, data=args.data, samples=args.samples, trials=args.trials, search=args.search,
                        workers=args.workers, ray=args.ray, seed=args.seed, note=args.note or "", history=args.history,
                        resume=args.resume, ort=not args.no_ort)
    opts.check()
    try:
        result = run_work(sweep_job(req, opts), args.quiet)
    except KeyboardInterrupt:
        InertConsole(stderr=True).print("interrupted: every finished candidate is in the history; `layerscope sweep --resume RUN_ID` "
                                   "continues (`layerscope history --kind sweep` lists the runs)")
        raise
    console = InertConsole(width=max(InertConsole().width, 150) if not sys.stdout.isatty() else None)
    print_sweep(result, console, args.top)
    _write_outputs(result, args, console)
    return 0


def _write_outputs(result: SweepResult, args: argparse.Namespace, console: Console) -> None:
    from layerscope.profiler.history import machine_name

    if args.out:
        written, stale = write_plans(result, args.out, force=args.force)
        console.print(f"Wrote {len(written)} plan file(s) to {args.out}"
                      + (f"; best: {args.out}/best.plan.json" if result.passing else "")
                      + (f"; removed {len(stale)} plan file(s) of an earlier run" if stale else ""))
    if args.html:
        atomic_write_text(args.html, sweep_html(result, args.out, machine_name()), "--html")
        console.print(f"Wrote {args.html}")
    if args.csv:
        atomic_write_text(args.csv, sweep_csv(result), "--csv")
        console.print(f"Wrote {args.csv}")
    if args.json:
        atomic_write_text(args.json, json.dumps(result.to_dict(), indent=1), "--json")
        console.print(f"Wrote {args.json}")
    model = result.model
    if result.passing:
        best = result.by_id(result.passing[0])
        plan = f"{args.out}/best.plan.json" if args.out else "PLAN.json (--out DIR writes the plans)"
        export = "--export-ort ort.json" if best.runs_in_ort else "--export-coreml coreml.json"
        console.print(f"Next: layerscope compress {model} --plan {plan} {export}")
        if not best.runs_in_ort:
            in_ort = [result.by_id(i) for i in result.passing if result.by_id(i).runs_in_ort]
            console.print("  (ONNX Runtime runs int8 plans only: " + (
                f"the best passing one is #{in_ort[0].id} {in_ort[0].label}"
                + (f", {args.out}/candidate-{in_ort[0].id:03d}.plan.json" if args.out else "") if in_ort
                else "none of the passing candidates is int8; --export-ort needs one") + ")")
    console.print(f"Recorded as history run {result.run_id} in {result.history}")


def add_sweep_parser(sub) -> None:
    s = sub.add_parser("sweep", help="search compression recipes under budgets: Pareto fronts, pass/fail per target, HTML report")
    ModelRequest.add_arguments(s, runs=20, device=False)
    g = s.add_argument_group("budgets (a --budgets file, flags on top)")
    g.add_argument("--budgets", help="budgets JSON: " + ", ".join(BUDGET_KEYS))
    for k in BUDGET_KEYS:
        if k != "targets":
            g.add_argument(f"--{k.replace('_', '-')}", dest=k, type=float, metavar="X")
    g.add_argument("--target", action="append", metavar="T",
                   help="where the budgets must hold: this (measured), a device profile name or a .json file (repeatable; "
                        "default: this)")
    s.add_argument("--space", help="search space JSON (techniques × strengths × layers, mixed precision); default: see README")
    s.add_argument("--trials", type=int, help="candidates to measure (default: the whole grid; fewer: Optuna's TPE chooses)")
    s.add_argument("--search", choices=["auto", "grid", "optuna"], default="auto",
                   help="grid, or Optuna's multi-objective TPE under the budgets (auto: grid when it fits in --trials)")
    s.add_argument("--workers", type=int, default=1, help="candidates measured at once (timing stays one at a time per host)")
    s.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run candidates as Ray actors: on a cluster at ADDRESS (host:port), or a local instance when none")
    add_data_arguments(s, threshold=False)
    s.add_argument("--seed", type=int, default=0, help="the search's random seed")
    s.add_argument("--no-ort", action="store_true", help="skip the real ONNX Runtime int8 measurement of int8 recipes")
    s.add_argument("--resume", type=int, metavar="RUN_ID", help="continue an interrupted sweep (finished candidates are kept)")
    s.add_argument("--note", help="a note stored with the run in the history")
    s.add_argument("--history", metavar="URL", help="history database: a file path or a database URL (default: "
                                                    "$LAYERSCOPE_HISTORY or ~/.local/share/layerscope/history.sqlite)")
    s.add_argument("--out", metavar="DIR", help="write every candidate's plan file, and best.plan.json, into DIR (new, empty, or "
                                                 "written by LayerScope; an earlier run's plans there are replaced)")
    s.add_argument("--force", action="store_true", help=FORCE_HELP)
    s.add_argument("--html", help="write a self-contained HTML report with the trade-off plots")
    s.add_argument("--csv", help="write one row per candidate as CSV")
    s.add_argument("--json", help="write everything (candidates, fronts, pass/fail per budget per target) as JSON")
    s.add_argument("--top", type=int, default=20, help="rows in the table (default 20)")
    s.set_defaults(func=cmd_sweep)


# --------------------------------------------------------------------------- history
def cmd_history(args: argparse.Namespace) -> int:
    from layerscope.profiler.history.store import HistoryStore  # SQLAlchemy loads for this command only

    store = HistoryStore(args.history)
    console = InertConsole(width=max(InertConsole().width, 150) if not sys.stdout.isatty() else None)
    action = args.action or "list"
    if action == "list":
        runs = store.runs(args.model, args.kind, args.limit)
        table = Table(title=f"History ({store.where})", title_justify="left")
        for col in ("id", "when (UTC)", "kind", "status", "model", "hash", "summary", "note"):
            table.add_column(col, overflow="fold", justify="right" if col == "id" else "left")
        for r in runs:
            table.add_row(str(r.id), r.created.replace("T", " ")[:19], r.kind, r.status, r.model, r.model_hash[:8], r.summary(),
                          r.note)
        console.print(table if runs else f"No runs in {store.where}" + (f" for {args.model!r}" if args.model else ""))
    elif action == "show":
        r = store.run(args.id)
        if r.kind == "sweep":
            result, _ = load_sweep(store, r.id)
            print_sweep(result, console, args.top)
            if args.html or args.csv or args.json or args.out:
                check_before_work(args, OUTPUTS, {"out": "--out"})
                _write_outputs(result, args, console)
        else:
            console.print(styled((f"run {r.id}", "bold"), f": {r.kind} of {r.model} ({r.model_hash}) on {r.machine}, {r.created}, {r.status}"))
            console.print(f"  {r.summary()}")
            if r.plan:
                console.print(f"  plan: {json.dumps(r.plan)}")
            if r.note:
                console.print(f"  note: {r.note}")
            if args.json:
                atomic_write_text(args.json, json.dumps({"run": r.__dict__}, indent=1, default=str), "--json")
        if r.kind == "sweep" and r.note:
            console.print(f"note: {r.note}")
    elif action == "note":
        store.set_note(args.id, args.text)
        console.print(f"Run {args.id}: note saved")
    elif action == "compare":
        _print_compare(store, args.a, args.b, args.top, console)
    return 0


def _print_compare(store: HistoryStore, a_id: int, b_id: int, top: int, console: Console) -> None:
    a, b = store.run(a_id), store.run(b_id)
    if a.model_hash != b.model_hash:
        console.print(styled(("note:", "yellow"), f" runs {a.id} and {b.id} are of different models ({a.model_hash[:8]} vs {b.model_hash[:8]})"))
    metrics, diffs, only_a, only_b = compare_runs(a, b)
    console.print(styled((f"run {a.id}", "bold"), f" ({a.kind}, {a.created}) vs ", (f"run {b.id}", "bold"),
                         f" ({b.kind}, {b.created}); {a.machine}" + ("" if a.machine == b.machine else f" vs {b.machine}")))
    for k, (x, y) in metrics.items():
        console.print(f"  {k}: {x} → {y}")
    if not (a.layers and b.layers):
        console.print("  (no per-layer numbers in " + (f"run {a.id}" if not a.layers else f"run {b.id}") + ")")
        return
    table = Table(title=f"{len(diffs)} layer(s) differ (largest latency change first)", title_justify="left")
    for col in ("layer", f"latency ms {a.id}", f"{b.id}", "change", f"weights {a.id} → {b.id}", f"FLOPs {a.id} → {b.id}", "technique", "other"):
        table.add_column(col, overflow="fold", justify="left" if col in ("layer", "technique", "other") else "right")
    for d in diffs[:top]:
        v = d.values
        la, lb = v.get("latency_ms", (None, None))
        change = f"{(lb - la) / la:+.0%}" if isinstance(la, float) and isinstance(lb, float) and la > 0 else "-"
        wa, wb = v.get("weight_bytes", (None, None))
        fa, fb = v.get("flops", (None, None))
        ta, tb = v.get("technique", (None, None))
        other = "; ".join(f"{k} {x} → {y}" for k, (x, y) in v.items()
                          if k not in ("latency_ms", "weight_bytes", "flops", "technique", "type") and x != y)
        table.add_row(d.layer_id, _val(la), _val(lb), change, f"{fmt_bytes(wa)} → {fmt_bytes(wb)}" if wa != wb else fmt_bytes(wa),
                      f"{_val(fa)} → {_val(fb)}" if fa != fb else _val(fa), tb or ta or "", other)
    if len(diffs) > top:
        table.add_row(f"… {len(diffs) - top} more (--top)", *[""] * 7)
    console.print(table)
    if only_a or only_b:
        console.print(f"  only in {a.id}: {', '.join(only_a[:8]) or '-'}; only in {b.id}: {', '.join(only_b[:8]) or '-'}")


def _val(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def add_history_parser(sub) -> None:
    h = sub.add_parser("history", help="the experiment history: every profile, compress and sweep run (list, show, note, compare)")
    h.add_argument("--history", metavar="URL", help="history database (default: $LAYERSCOPE_HISTORY or "
                                                    "~/.local/share/layerscope/history.sqlite)")
    h.add_argument("--model", help="only runs of this model (spec, hash, or part of the spec)")
    h.add_argument("--kind", choices=["profile", "compress", "sweep"], help="only runs of this kind")
    h.add_argument("--limit", type=int, default=50, help="most recent runs to list (default 50)")
    hs = h.add_subparsers(dest="action")
    show = hs.add_parser("show", help="one run; a sweep's full table (and --html/--csv/--json/--out again)")
    show.add_argument("id", type=int)
    show.add_argument("--top", type=int, default=20)
    for flag in ("html", "csv", "json"):
        show.add_argument(f"--{flag}")
    show.add_argument("--out", metavar="DIR", help="a sweep's plan files")
    show.add_argument("--force", action="store_true", help=FORCE_HELP)
    note = hs.add_parser("note", help="set a run's note")
    note.add_argument("id", type=int)
    note.add_argument("text")
    cmp = hs.add_parser("compare", help="two runs layer by layer")
    cmp.add_argument("a", type=int)
    cmp.add_argument("b", type=int)
    cmp.add_argument("--top", type=int, default=25)
    h.set_defaults(func=cmd_history)

