"""``layerscope compare``: activation ranges and error, layer by layer, and ranked diagnostics."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from layerscope.profiler.compare import ActivationComparison, Diagnostic
from layerscope.profiler.compression import CompressionPlan
from layerscope.profiler.errors import PlanError
from layerscope.profiler.files.safeio import atomic_write_text
from layerscope.profiler.files.serde import to_jsonable
from layerscope.profiler.format import fmt_db
from layerscope.profiler.jobs import ModelRequest, compare_job

from .common import InertConsole, add_data_arguments, check_before_work, request_for, run_work, styled

__all__ = ["add_compare_parser", "print_comparison", "print_diagnostics"]

_BARS = " ▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "exact everywhere"
    lo, hi = min(finite), max(finite)
    out = []
    for v in values:
        if not math.isfinite(v):
            out.append(_BARS[-1])
        else:
            out.append(_BARS[1 + int((len(_BARS) - 2) * ((v - lo) / (hi - lo) if hi > lo else 1.0))])
    return "".join(out) + f"  ({lo:.1f}–{hi:.1f} dB)"


def print_comparison(cmp: ActivationComparison, diags: list[Diagnostic], top: int, threshold: float, console: Console) -> None:
    console.print(styled((cmp.reference, "bold"), " vs ", (cmp.candidate, "bold"),
                         f" on {cmp.samples} sample(s) ({cmp.data_source}); {len(cmp.layers)} layers compared"))
    for note in cmp.notes:
        console.print(f"  note: {note}")
    curve = cmp.sqnr_curve()
    console.print(f"SQNR along depth: {sparkline([c[2] for c in curve])}")
    first = cmp.first_below(threshold)
    console.print(styled(f"First layer under {threshold:g} dB: ", *(((first.layer_id, "bold"), f" ({first.type_name}, "
                         f"{fmt_db(first.sqnr_db)}, position {first.position})") if first else ("none",))))
    table = Table(title=f"{min(top, len(cmp.layers))} layers with the lowest SQNR (execution order)", title_justify="left")
    for col in ("#", "layer", "type", "reference range", "p0.01 … p99.99", "candidate range", "SQNR dB", "cosine",
                "max |err|", "range ratio", "clipped"):
        table.add_column(col, justify="left" if col in ("layer", "type") else "right", overflow="fold")
    worst = sorted((lc for lc in cmp.layers if lc.sqnr_db is not None), key=lambda lc: lc.sqnr_db or 0.0)[:top]
    for lc in sorted(worst, key=lambda lc: lc.position):
        r, c = lc.reference, lc.candidate
        table.add_row(str(lc.position), lc.layer_id, lc.type_name, f"[{r.min:.3g}, {r.max:.3g}]",
                      f"{r.percentiles['0.01']:.3g} … {r.percentiles['99.99']:.3g}",
                      f"[{c.min:.3g}, {c.max:.3g}]" if c else "-", fmt_db(lc.sqnr_db, '', '-'),
                      "-" if lc.cosine is None else f"{lc.cosine:.4f}", "-" if lc.max_abs_error is None else f"{lc.max_abs_error:.3g}",
                      "-" if lc.range_ratio is None else f"{lc.range_ratio:.3f}",
                      "-" if lc.input_clip_rate is None else f"{lc.input_clip_rate:.2%}")
    console.print(table)
    changed = [lc.layer_id for lc in cmp.layers if lc.sqnr_db is None and lc.candidate is not None]
    if changed:
        console.print(f"Shape changed (channels pruned), no element-wise error: {', '.join(changed[:8])}{' …' if len(changed) > 8 else ''}")
    _print_diagnostic_list(diags, console)


def print_diagnostics(cmp: ActivationComparison, diags: list[Diagnostic], threshold: float, console: Console) -> None:
    """The short form ``compress`` prints: SQNR along depth, the first broken layer, the diagnostics."""
    curve = cmp.sqnr_curve()
    console.print(f"Activations ({cmp.samples} sample(s)): SQNR along depth {sparkline([c[2] for c in curve])}")
    for note in cmp.notes:
        console.print(f"  note: {note}")
    first = cmp.first_below(threshold)
    console.print(styled(f"First layer under {threshold:g} dB: ", *(((first.layer_id, "bold"),
                         f" ({first.type_name}, {fmt_db(first.sqnr_db)})") if first else ("none",))))
    _print_diagnostic_list(diags, console)


def _print_diagnostic_list(diags: list[Diagnostic], console: Console) -> None:
    if not diags:
        console.print(styled(("No range diagnostics.", "green")))
    for k, d in enumerate(diags, 1):
        console.print(styled((f"{k}. {d.kind.value}", "bold yellow"), f" {d.message}\n   evidence: {d.evidence}\n   fix: {d.fix}"))


def cmd_compare(args: argparse.Namespace) -> int:

    if not args.plan and not args.against:
        raise PlanError("Give --plan plan.json (float vs compressed), and optionally --plan-b, or --against OTHER_MODEL.")
    check_before_work(args, {"json": "--json"})
    plans = {p: CompressionPlan.load(p) for p in (args.plan, args.plan_b) if p}  # bad plans fail before any work
    req = request_for(args)
    work = compare_job(req, plans.get(args.plan), plans.get(args.plan_b),
                       (Path(args.plan).name if args.plan else "", Path(args.plan_b).name if args.plan_b else ""),
                       against=args.against, data=args.data, samples=args.samples, threshold_db=args.threshold,
                       range_factor=args.range_factor, calib_data=args.calib_data)
    cmp, diags = run_work(work, args.quiet)
    console = InertConsole(width=max(InertConsole().width, 150) if not sys.stdout.isatty() else None)
    print_comparison(cmp, diags, args.top, args.threshold, console)
    if args.json:
        atomic_write_text(args.json, json.dumps({"comparison": to_jsonable(cmp), "diagnostics": to_jsonable(diags),
                                                 "summary": to_jsonable(cmp.summary(args.threshold))}, indent=1), "--json")
        console.print(f"Wrote {args.json}")
    return 0


def add_compare_parser(sub) -> None:
    c = sub.add_parser("compare", help="compare activation ranges of the float and compressed model layer by layer; diagnose")
    ModelRequest.add_arguments(c, runs=3, warmup=1, device=False)  # compare runs on the CPU; timing only feeds selectors
    c.add_argument("--plan", help="CompressionPlan JSON: the candidate (or, with --plan-b, the reference)")
    c.add_argument("--plan-b", help="a second plan: compare plan A (reference) against plan B (candidate)")
    c.add_argument("--against", help="compare MODEL against another model with the same layer ids (zoo name or file.py:factory)")
    add_data_arguments(c)
    c.add_argument("--range-factor", type=float, default=10.0, help="flag merges whose inputs' ranges differ by more (default 10)")
    c.add_argument("--top", type=int, default=15, help="rows in the layer table (default 15)")
    c.add_argument("--json", help="write the comparison and diagnostics as JSON")
    c.set_defaults(func=cmd_compare)
