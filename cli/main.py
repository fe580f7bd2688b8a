"""``layerscope`` command line: profile, onnx, compress, compare, calibrate, gui, zoo, devices.

Headless: never imports Qt; ``gui`` imports the desktop app only when asked (the one import
contract exception, see pyproject.toml).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, JustifyMethod
from rich.table import Table

from layerscope.profiler import ZOO, Bound, LayerScopeError, Profile, calibrate, device_profile_names
from layerscope.profiler.errors import describe
from layerscope.profiler.files.safeio import OutputFolder, atomic_write_text
from layerscope.profiler.files.workspace import Terminated, install_signal_handlers
from layerscope.profiler.format import fmt_bytes, fmt_count, fmt_ms, fmt_pct
from layerscope.profiler.hardware import save_cached, save_provisional, trusted
from layerscope.profiler.jobs import MODEL_HELP, ModelRequest, onnx_job, profile_job
from layerscope.profiler.resources import parse_device

from .common import (
    FORCE_HELP,
    ME_HELP,
    InertConsole,
    add_history_arguments,
    check_before_work,
    err,
    record_for,
    request_for,
    run_work,
    said_model_explorer,
    said_recorded,
    setup_logging,
    styled,
    write_model_explorer_for,
)
from .compare import add_compare_parser
from .compress import add_compress_parser
from .sweep import add_history_parser, add_sweep_parser

if TYPE_CHECKING:
    from layerscope.profiler.runtimes.onnx import OnnxProfile

BOUND_STYLE = {Bound.MEMORY: "cyan", Bound.COMPUTE: "magenta", Bound.NO_WORK: "dim", Bound.UNKNOWN: "yellow"}


def print_profile(profile: Profile, top: int, console: Console, threads_given: bool = False) -> None:
    m, s, hw = profile.model, profile.summary, profile.hardware
    threads_note = "" if threads_given else " (torch's default here; --threads N)"
    dtype = m.compute_dtype
    peak, peak_dtype = hw.peak_for(dtype)
    console.print(styled((m.name, "bold"), f"  inputs {', '.join('x'.join(map(str, sh)) for sh in m.input_shapes)} "
                         f"{'/'.join(m.input_dtypes)}  captured with ", (m.capture_method.value, "bold")))
    for note in m.capture_notes:
        console.print(styled("  ", ("note:", "yellow"), f" {note}"))
    console.print(f"Roofline: {hw.name} ({hw.kind}): {peak:.1f} GFLOP/s {peak_dtype}, {hw.bandwidth_gbs:.1f} GB/s, "
                  f"ridge {hw.ridge_point(dtype):.1f} FLOP/byte")
    for note in hw.notes:
        console.print(styled("  ", ("note:", "yellow"), f" {note}"))
    if hw.kind != "measured":
        console.print(styled("  ", ("note:", "yellow"), " bound classes use this target's ridge point; latencies were measured on "
                             "this machine, so '% roof' is not computed against the target."))
    by = ("FLOPs (static profile: nothing timed)" if profile.static else
          "measured latency (25th percentile: the machine was busy)" if s.busy else "measured latency")
    table = Table(title=f"Top {min(top, len(profile.graph))} of {len(profile.graph)} layers by {by}", title_justify="left")
    columns: list[tuple[str, JustifyMethod]] = [
        ("#", "right"), ("layer", "left"), ("type", "left"),
        ("latency p25 ms" if profile.rank_statistic == "p25" else "latency ms", "right"), ("± IQR", "right"), ("share", "right"),
        ("FLOPs", "right"), ("bytes", "right"), ("FLOP/B", "right"), ("bound", "left"), ("% roof", "right")]
    for col, just in columns:
        table.add_column(col, justify=just, no_wrap=True, overflow="fold" if col == "layer" else "ellipsis",
                         max_width=16 if col == "type" else None)
    for i, r in enumerate(profile.ranked(top, steady_only=True), 1):
        t, p, mt = r.timing, r.point, r.metrics
        kind = r.layer.type_name
        ai = mt.arithmetic_intensity
        table.add_row(
            str(i), r.layer.id, kind, fmt_ms(profile.rank_ms(r)) if t else "-", fmt_ms(t.spread_ms) if t else "-",
            fmt_pct(r.latency_share), "unknown" if mt.flops is None else fmt_count(mt.flops), fmt_bytes(mt.bytes_moved),
            "-" if ai is None else f"{ai:.1f}", styled((r.bound.value, BOUND_STYLE[r.bound])),
            "-" if not p else styled((p.roof_text(), "red" if p.above_roof else "")),
        )
    console.print(table)
    if (warning := profile.roof_warning()) is not None:
        console.print(styled("  ", ("warning:", "yellow"), f" {warning}"))
    counts = profile.bound_counts()
    unknown = profile.unknown_layers
    console.print(f"Params {m.total_params:,}  weights {fmt_bytes(m.total_weight_bytes)}  MACs {fmt_count(profile.total_macs)}  "
                  f"FLOPs {fmt_count(profile.total_flops)}" + (f" (+{len(unknown)} layers unknown: {', '.join(unknown[:5])})" if unknown else ""))
    console.print(f"Layers: {counts[Bound.MEMORY]} memory-bound, {counts[Bound.COMPUTE]} compute-bound, "
                  f"{counts[Bound.NO_WORK]} no-work views, {counts[Bound.UNKNOWN]} unknown")
    if profile.static:
        console.print("Latency: not measured (static profile)")
    else:
        more = f" ({s.runs_requested} asked, more while layers stayed noisy)" if s.runs_requested and s.runs > s.runs_requested else ""
        load = f", other processes used {s.other_load:.0%} of the CPUs" if s.other_load is not None else ""
        console.print(f"Latency: end-to-end {fmt_ms(s.end_to_end_ms)} ms (IQR {fmt_ms(s.end_to_end_p25_ms)}–{fmt_ms(s.end_to_end_p75_ms)}), "
                      f"median of {s.runs} runs{more} after {s.warmup} warm-up, {s.threads} thread{'s' if s.threads != 1 else ''}{threads_note}, {s.device}, "
                      f"{s.timer}{load}")
        console.print(f"Fidelity: sum of per-layer medians {fmt_ms(s.sum_of_layer_medians_ms)} ms = {fmt_pct(s.fidelity)} of end-to-end "
                      f"(glue nodes {fmt_ms(s.glue_ms)} ms)")
    console.print(f"{'Memory a run would need (estimated)' if profile.static else 'Peak memory'} {fmt_bytes(s.peak_memory_bytes)} = "
                  f"weights {fmt_bytes(s.weight_bytes)} + peak live activations {fmt_bytes(s.peak_activation_bytes)}")
    for warning in s.warnings:
        console.print(styled(("warning:", "yellow"), f" {warning}"))


def cmd_profile(args: argparse.Namespace) -> int:
    check_before_work(args, {"json": "--json", "csv": "--csv"}, {"model_explorer": "--model-explorer"})
    record = record_for(args)
    loaded: list = []
    profile = run_work(profile_job(request_for(args), record, on_loaded=loaded.append), args.quiet)
    out = InertConsole(width=max(InertConsole().width, 140) if not sys.stdout.isatty() else None)
    print_profile(profile, args.top, out, threads_given=args.threads is not None)
    if args.model_explorer:
        write_model_explorer_for(args.model_explorer, profile, loaded[0], out, force=args.force)
    if args.json:
        profile.save(args.json)
        out.print(f"Wrote {args.json}")
    if args.csv:
        atomic_write_text(args.csv, profile.to_csv(), "--csv")
        out.print(f"Wrote {args.csv}")
    said_recorded(record, out)
    return 0


def print_onnx(op: OnnxProfile, top: int, console: Console) -> None:
    console.print(styled((op.model_name, "bold"), f"  {op.exporter.value} → ONNX Runtime {op.ort_version}, opt level ",
                         (op.opt_level.value, "bold"), f", {op.provider}"))
    for note in op.notes:
        console.print(styled("  ", ("note:", "yellow"), f" {note}"))
    table = Table(title=f"Top {min(top, len(op.ops))} of {len(op.ops)} compiled ops by ORT kernel time", title_justify="left")
    columns: list[tuple[str, JustifyMethod]] = [
        ("#", "right"), ("ORT op", "left"), ("op type", "left"), ("ms", "right"), ("share", "right"), ("source layers", "left"),
        ("match", "left"), ("source line", "left")]
    for col, just in columns:
        table.add_column(col, justify=just, overflow="fold", no_wrap=col in ("#", "ms", "share", "match"))
    total = op.total_op_ms or 1.0
    for i, o in enumerate(op.ranked()[:top], 1):
        layers = ", ".join(o.layer_ids) if o.layer_ids else (", ".join(o.onnx_nodes[:3]) + (" …" if len(o.onnx_nodes) > 3 else ""))
        table.add_row(str(i), o.name, o.op_type, fmt_ms(o.latency_ms), fmt_pct(o.latency_ms / total),
                      layers or "-", o.how.value + (" (fused)" if o.fused else ""), "; ".join(o.source_lines[:2]) or "-")
    console.print(table)
    target = "source layers" if op.has_source else "ONNX nodes (no PyTorch source)"
    console.print(f"Coverage: {fmt_pct(op.coverage_ops)} of ops and {fmt_pct(op.coverage_time)} of op time mapped to {target}")
    if op.unmapped:
        console.print(styled(("Unmapped ops:", "yellow"), f" {', '.join(op.unmapped)}"))
    console.print(f"ORT end-to-end {fmt_ms(op.end_to_end_ms)} ms (IQR {fmt_ms(op.end_to_end_p25_ms)}–{fmt_ms(op.end_to_end_p75_ms)}), "
                  f"median of {op.runs} runs after {op.warmup} warm-up; sum of op medians {fmt_ms(op.total_op_ms)} ms")
    kept = (f"optimised graph kept in {op.optimized_path}" if op.optimized_path
            else "work files removed (--workdir DIR keeps the exported and optimised graphs)")
    console.print(f"Export {op.export_seconds:.1f} s, session {op.session_seconds:.1f} s, profiling {op.profile_seconds:.1f} s; {kept}")


def cmd_onnx(args: argparse.Namespace) -> int:
    check_before_work(args, {"json": "--json"}, {"model_explorer": "--model-explorer", "workdir": "--workdir"})
    spec = args.model or "resnet18"
    plain = spec.endswith(".onnx")
    req = request_for(args, spec)
    with contextlib.ExitStack() as stack:
        workdir: str | OutputFolder | None = OutputFolder(args.workdir, "--workdir", args.force) if args.workdir else None
        if args.model_explorer and not workdir and not plain:  # the exported .onnx must outlive the job to be copied
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="layerscope-onnx-"))
        work = onnx_job(req, opt_level=args.opt_level, provider=args.provider, onnx_path=spec if plain else None,
                        workdir=workdir)
        result = run_work(work, args.quiet)
        out = InertConsole(width=max(InertConsole().width, 160) if not sys.stdout.isatty() else None)
        if args.model_explorer:
            from layerscope.profiler.reports.model_explorer import write_onnx_model_explorer

            files = write_onnx_model_explorer(args.model_explorer, result, spec if plain else result.onnx_path, force=args.force)
        if not args.workdir:
            result = dataclasses.replace(result, onnx_path="", optimized_path="")
    print_onnx(result, args.top, out)
    if args.model_explorer:
        said_model_explorer(files, "compiled ops", out)
    if args.json:
        atomic_write_text(args.json, result.to_json(), "--json")
        out.print(f"Wrote {args.json}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    device = parse_device(args.device)
    hw = run_work(calibrate(device.type, matmul_size=args.size), args.quiet)
    console = InertConsole()
    for dt, g in hw.peak_gflops.items():
        console.print(f"peak {dt:<9} {g:10.1f} GFLOP/s")
    console.print(f"bandwidth {hw.bandwidth_gbs:10.1f} GB/s   ridge (float32) {hw.ridge_point():.1f} FLOP/byte")
    for key, value in hw.details.items():  # every kernel and bandwidth measured, and the theoretical peak
        if key.startswith(("kernel ", "bandwidth ", "theoretical")):
            console.print(f"  {key}: {value}", highlight=False)
    for note in hw.notes:
        console.print(styled(("note:", "yellow"), f" {note}"))
    if trusted(hw):
        console.print(f"{hw.name}; cached in {save_cached(hw)}")
    elif (kept := save_provisional(hw)) is not None:
        console.print(styled(f"{hw.name}; ", ("kept as provisional", "yellow"), f" in {kept} until a clean calibration replaces it"))
    else:
        console.print(styled(f"{hw.name}; ", ("not cached", "yellow"), " (the cached roof, clean or provisional, is unchanged)"))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from layerscope.profiler.files.safeio import read_json
    from layerscope.profiler.reports.report import check_compress_report, profile_html
    from layerscope.profiler.runtimes.onnx import OnnxProfile

    check_before_work(args, {"out": "-o/--out"})
    profile = Profile.load(args.profile)
    other = Profile.load(args.compare) if args.compare else None
    names = (Path(args.profile).stem, Path(args.compare).stem if args.compare else "")
    onnx = OnnxProfile.load(args.onnx, "--onnx") if args.onnx else None
    compressed = (check_compress_report(read_json(args.compress, "--compress", LayerScopeError), f"--compress {args.compress}")
                  if args.compress else None)
    atomic_write_text(args.out, profile_html(profile, other, names, onnx, compressed), "-o/--out")
    InertConsole().print(f"Wrote {args.out} (one self-contained HTML file: open it in any browser, no network needed)")
    return 0


def cmd_gui(args: argparse.Namespace) -> int:
    from layerscope.app.main import run_gui  # Qt is imported only here

    return run_gui(args)


def cmd_zoo(_args: argparse.Namespace) -> int:
    console = InertConsole()
    for name, e in ZOO.items():
        console.print(f"{name:<14} {e.description}")
    return 0


def cmd_devices(_args: argparse.Namespace) -> int:
    from layerscope.profiler import load_device_profile

    console = InertConsole()
    for name in device_profile_names():
        hw = load_device_profile(name)
        console.print(f"{name:<22} {hw.name}: {', '.join(f'{k} {v:g} GFLOP/s' for k, v in hw.peak_gflops.items())}, "
                      f"{hw.bandwidth_gbs:g} GB/s\n{'':<22} source: {hw.source}")
    return 0


def _add_onnx_parser(sub: Any) -> None:
    o = sub.add_parser("onnx", help="export to ONNX, profile in ONNX Runtime, map compiled ops to source layers")
    o.add_argument("model", nargs="?", default=None, help=MODEL_HELP + " Or a plain .onnx file.")
    o.add_argument("--trust-file", action="store_true", help="load a .pt2 even if it asks to run code (see profile --help)")
    o.add_argument("--max-memory", type=float, metavar="GIB", help="activation memory limit for --input-shape (see profile --help)")
    o.add_argument("--input-shape", help="input shape, e.g. 1,3,224,224")
    o.add_argument("--dtype", choices=["float32", "float16", "bfloat16", "float64"])
    o.add_argument("--submodule", metavar="NAME", help="export one named submodule (see profile --help)")
    o.add_argument("--opt-level", choices=["disabled", "basic", "extended", "all"], default="all",
                   help="ONNX Runtime graph optimisation level (default all)")
    o.add_argument("--provider", default="CPUExecutionProvider", help="ONNX Runtime execution provider")
    o.add_argument("--runs", type=int, default=20)
    o.add_argument("--warmup", type=int, default=3)
    o.add_argument("--top", type=int, default=20)
    o.add_argument("--json", help="write the op mapping as JSON")
    o.add_argument("--model-explorer", metavar="FOLDER", help="write the exported model.onnx (or point at your .onnx) and "
                   "ONNX Runtime kernel time per ONNX node as Model Explorer node data (model-explorer-onnx's node ids)")
    o.add_argument("--force", action="store_true", help=FORCE_HELP)
    o.add_argument("--workdir", help="keep the exported .onnx, the optimised .onnx and the ORT trace in this folder "
                                    "(default: a scratch folder in LayerScope's cache, removed afterwards)")
    o.set_defaults(func=cmd_onnx)


def _add_report_parser(sub: Any) -> None:
    r = sub.add_parser("report", help="a saved profile as one self-contained HTML report (roofline, ranked table, totals)")
    r.add_argument("profile", help="a profile JSON (profile --json, or the app's Save profile)")
    r.add_argument("--compare", metavar="OTHER.json", help="another profile of the same model: compared layer by layer")
    r.add_argument("--onnx", metavar="ONNX.json", help="`layerscope onnx --json` of the same model: the compiled ops and their coverage")
    r.add_argument("--compress", metavar="COMPRESS.json", help="`layerscope compress --json`: size, latency and quality before/after, "
                                                              "each layer's change, SQNR along depth and the diagnostics")
    r.add_argument("-o", "--out", required=True, help="the HTML file to write")
    r.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerscope", description="Find the bottleneck layers of a PyTorch model.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what LayerScope decides to stderr; -vv: debug detail and each error's full cause")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profile", help="profile every layer and print the ranked bottlenecks")
    ModelRequest.add_arguments(p, static=True)
    p.add_argument("--top", type=int, default=15, help="rows in the ranked table (default 15)")
    p.add_argument("--json", help="write the full Profile as JSON")
    p.add_argument("--csv", help="write one row per layer as CSV")
    p.add_argument("--model-explorer", metavar="FOLDER", help=ME_HELP)
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    add_history_arguments(p)
    p.set_defaults(func=cmd_profile)
    _add_onnx_parser(sub)
    c = sub.add_parser("calibrate", help="measure this machine's peak FLOP/s and bandwidth (cached)")
    c.add_argument("--device", default="cpu")
    c.add_argument("--size", type=int, default=2048, help="largest matmul size, 64 to 16384 (default 2048)")
    c.set_defaults(func=cmd_calibrate)
    g = sub.add_parser("gui", help="open the desktop app")
    ModelRequest.add_arguments(g, static=True)
    g.add_argument("--profile", dest="profile_json", help="open a saved profile JSON instead of profiling")
    g.add_argument("--sweep", type=int, metavar="RUN_ID", help="open a recorded sweep's trade-offs (and its reference profile)")
    g.add_argument("--history", metavar="URL", help="the history database --sweep reads")
    g.add_argument("--screenshot", help=argparse.SUPPRESS)  # used by docs/tests: save a PNG and quit
    g.set_defaults(func=cmd_gui)
    add_compress_parser(sub)
    add_compare_parser(sub)
    add_sweep_parser(sub)
    add_history_parser(sub)
    _add_report_parser(sub)
    sub.add_parser("zoo", help="list built-in models").set_defaults(func=cmd_zoo)
    sub.add_parser("devices", help="list shipped target-device profiles").set_defaults(func=cmd_devices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag in ("quiet",):
        setattr(args, flag, getattr(args, flag, False))
    install_signal_handlers()  # SIGTERM unwinds like Ctrl+C: work folders and half-written outputs are removed
    with setup_logging(args.verbose):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except LayerScopeError as exc:
        if args.verbose > 1:
            err.print_exception(show_locals=False)  # the wrapped library error, its cause kept
        err.print(styled(("error:", "bold red"), f" {exc}"), highlight=False)
        if args.verbose == 1 and exc.__cause__ is not None:
            cause = exc.__cause__
            err.print(f"  caused by {describe(cause)}",
                      highlight=False, markup=False)
        return 2
    except OSError as exc:  # a file the user named could not be read or written
        where = f" {exc.filename}" if exc.filename else ""
        err.print(styled(("error:", "bold red"), f"{where}: {exc.strerror or exc}"), highlight=False)
        return 2
    except MemoryError:
        err.print(styled(("error:", "bold red"), " out of memory; try a smaller --input-shape or fewer --samples"), highlight=False)
        return 2
    except Terminated:
        err.print("terminated")
        return 143
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
