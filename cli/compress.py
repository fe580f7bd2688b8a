"""``layerscope compress``: apply a CompressionPlan (or a one-word estimate) and report the effect."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys

from rich.console import Console
from rich.table import Table

from layerscope.profiler.compression import (
    ESTIMATES,
    CompressionPlan,
    CompressResult,
    coreml_configs,
    estimate_plan,
    nncf_config,
    nncf_weight_nodes,
    torch_ao_mapping,
    torchao_config,
)
from layerscope.profiler.compression.apply import model_bytes
from layerscope.profiler.errors import PlanError
from layerscope.profiler.files.safeio import OutputFolder, atomic_path, atomic_write_text, check_output_path
from layerscope.profiler.format import fmt_bytes, fmt_count, fmt_db, fmt_ms, fmt_pct
from layerscope.profiler.jobs import ModelRequest, compress_job

from .common import (
    FORCE_HELP,
    ME_HELP,
    InertConsole,
    add_data_arguments,
    add_history_arguments,
    check_before_work,
    record_for,
    request_for,
    run_work,
    said_recorded,
    styled,
    write_model_explorer_for,
)
from .compare import print_diagnostics

__all__ = ["add_compress_parser", "print_report"]

def print_report(res: CompressResult, top: int, console: Console) -> None:
    out = res.output
    n_layers = len({c.layer_id for c in res.weights})
    weights = "" if n_layers == len(res.weights) else f" ({len(res.weights)} weights)"
    console.print(styled((res.model, "bold"), f": {len(res.plan['specs'])} spec(s) → {n_layers} weight-compressed layer(s){weights}, "
                         f"{len(res.channels)} channel-pruned, {len(res.activations)} with int8 activations"))
    for w in res.warnings:
        console.print(styled("  ", ("warning:", "yellow"), f" {w}"))
    table = Table(title="Compressed layers (latency: this layer in the candidate profile)", title_justify="left")
    for col in ("layer", "technique", "bits/w", "weights before", "after", "weight SQNR", "latency before", "after"):
        table.add_column(col, justify="left" if col in ("layer", "technique") else "right", overflow="fold")
    deltas = {d.layer_id: d for d in res.layers}
    for c in res.weights[:top]:
        d = deltas[c.layer_id]
        one_weight = c.weight.name == f"{c.layer_id}.weight"
        label = c.layer_id if one_weight else f"{c.layer_id} ({c.weight.name})"
        table.add_row(label, c.weight.technique, f"{c.weight.bits_per_weight:.2f}", fmt_bytes(c.weight.bytes_before),
                      fmt_bytes(c.weight.bytes_after), fmt_db(c.weight.sqnr_db), fmt_ms(d.latency_ms_before),
                      "-" if d.latency_ms_after is None else fmt_ms(d.latency_ms_after))
    if len(res.weights) > top:
        table.add_row(f"… {len(res.weights) - top} more (--top, or --json for all)", "", "", "", "", "", "", "")
    if res.weights:
        console.print(table)
    for ch in res.channels[:top]:
        d = deltas[ch.layer_id]
        console.print(f"  pruned {ch.layer_id}: {ch.channels_before} → {ch.channels_after} channels ({ch.norm}); FLOPs "
                      f"{fmt_count(d.flops_before or 0)} → {fmt_count(d.flops_after or 0)}"
                      + (f"; also repaired {len(ch.coupled_layers)}: {', '.join(ch.coupled_layers[:4])}{' …' if len(ch.coupled_layers) > 4 else ''}"
                         if ch.coupled_layers else ""))
    for a in res.activations[:top]:
        console.print(f"  activations {a.layer_id}: {a.calibration} range [{a.range_min:.3g}, {a.range_max:.3g}] of observed "
                      f"[{a.observed_min:.3g}, {a.observed_max:.3g}], clipped {fmt_pct(a.clip_rate)}, SQNR {fmt_db(a.sqnr_db)}")
    console.print(styled(f"Size: {fmt_bytes(res.size_bytes_before)} → {fmt_bytes(res.size_bytes_after)} (",
                         (f"{res.size_ratio:.3f}×", "bold"), "), real storage incl. scales, zero points, LUTs and masks"))
    if (left := res.not_compressed_text()) is not None:
        console.print(styled((f"Not compressed: {left}", "yellow" if res.unreachable else "")))
    sim = ("(simulated: weights are decoded to float and activations fake-quantised, so eager kernels are unchanged)"
           if res.simulated else "")
    console.print(styled(f"Latency (eager, interleaved, median of {res.latency_runs} after {res.warmup_runs} warm-up; layers captured with "
                         f"{res.capture_method}): {fmt_ms(res.latency_ms_before)} → {fmt_ms(res.latency_ms_after)} ms (",
                         (f"{res.latency.text()}", "bold"), ")", *((" ", (sim, "yellow")) if sim else ())))
    console.print(f"FLOPs: {fmt_count(res.flops_before)} → {fmt_count(res.flops_after)}")
    console.print(f"Output on {out.samples} sample(s) ({out.data_source}): SQNR {fmt_db(out.sqnr_db)}, cosine {out.cosine:.5f}, "
                  f"max |error| {out.max_abs_error:.3g}" + (f" (the first of {len(out.leaves)} outputs)" if out.leaves else ""))
    if out.leaves:
        console.print("  every output: " + ", ".join(f"{name} {fmt_db(db)}" for name, db in out.leaves[:8])
                      + (f" … (--json for all {len(out.leaves)})" if len(out.leaves) > 8 else ""))
    if out.accuracy_points is not None:
        console.print(styled(f"Top-1 accuracy: {fmt_pct(out.accuracy_reference)} → ", (fmt_pct(out.accuracy_candidate), "bold"),
                             f" ({out.accuracy_points:+.2f} points)"))
    if res.ort is not None:
        o = res.ort
        console.print(styled(f"ONNX Runtime int8 (real kernels, quantize_{o.config.mode}, {len(o.config.nodes_to_quantize)} node(s), "
                             f"batch {o.batch_size}): {fmt_ms(o.float_ms)} → {fmt_ms(o.int8_ms)} ms (speed-up ",
                             (f"{o.speedup:.2f}×", "bold"), f"), file {fmt_bytes(o.float_file_bytes)} → {fmt_bytes(o.int8_file_bytes)}, "
                             f"output SQNR vs float ORT {fmt_db(o.output_sqnr_db)}"
                             + (f", top-1 {fmt_pct(o.accuracy_float)} → {fmt_pct(o.accuracy_int8)}" if o.accuracy_float is not None else "")))
        for line in o.config.cannot_express:
            console.print(styled("  ", ("ORT adapter cannot express:", "dim"), f" {line}"))


OUTPUTS = {"json": "--json", "save_plan": "--save-plan", "export_ort": "--export-ort", "export_coreml": "--export-coreml",
           "export_torchao": "--export-torchao", "export_nncf": "--export-nncf", "export_torch_ao": "--export-torch-ao",
           "out": "--out", "onnx": "--onnx"}


def _write(path: str, text: str, console: Console, what: str) -> None:
    atomic_write_text(path, text, what)
    console.print(f"Wrote {path}")


def cmd_compress(args: argparse.Namespace) -> int:
    if (args.plan is None) == (args.estimate is None):
        raise PlanError("Give exactly one of --plan plan.json or --estimate {" + ",".join(ESTIMATES) + "}.")
    check_before_work(args, OUTPUTS, {"model_explorer": "--model-explorer", "workdir": "--workdir"})
    workdir = OutputFolder(args.workdir, "--workdir", args.force) if args.workdir else None
    plan = CompressionPlan.load(args.plan) if args.plan else estimate_plan(args.estimate)  # a bad plan fails first
    req = request_for(args)
    if args.no_ort and args.export_ort:
        raise PlanError("--export-ort needs the ONNX Runtime measurement that --no-ort skips; give one of them.")
    ort_int8 = not args.no_ort and (args.ort_int8 or bool(args.export_ort) or args.estimate in ("int8", "int8-weights"))

    kept: list = []

    def room_for_models(loaded) -> None:  # model-sized artifacts: is there room for them?
        kept.append(loaded)
        for attr in ("out", "onnx"):
            if getattr(args, attr):
                check_output_path(getattr(args, attr), OUTPUTS[attr], size_bytes=model_bytes(loaded.module))

    record = record_for(args)
    result = run_work(compress_job(req, plan, args.data, args.samples, ort_int8=ort_int8, workdir=workdir, threshold_db=args.threshold,
                                   on_loaded=room_for_models, record=record, calib_data=args.calib_data), args.quiet)
    profile = result.reference
    console = InertConsole(width=max(InertConsole().width, 150) if not sys.stdout.isatty() else None)
    print_report(result, args.top, console)
    print_diagnostics(result.comparison, result.diagnostics, args.threshold, console)
    if args.save_plan:
        _write(args.save_plan, plan.to_json(), console, "--save-plan")
    if args.json:
        _write(args.json, result.to_json(), console, "--json")
    if args.export_ort:
        if result.ort is None:
            raise PlanError("--export-ort: the plan has no int8 layer that ONNX Runtime's quantizer can take.")
        _write(args.export_ort, result.ort.config.to_json(), console, "--export-ort")
    if args.export_coreml:
        _write(args.export_coreml, json.dumps(coreml_configs(result.resolved, profile.graph), indent=2), console, "--export-coreml")
    if args.export_torchao:
        _write(args.export_torchao, json.dumps(torchao_config(result.resolved, profile.graph), indent=2), console, "--export-torchao")
    if args.export_nncf:  # with NNCF here, its own graph of the model names the ops to ignore; else apply_nncf does
        nodes = nncf_weight_nodes(kept[0].module, kept[0].inputs) if importlib.util.find_spec("nncf") else None
        _write(args.export_nncf, json.dumps(nncf_config(result.resolved, profile.graph, nodes), indent=2), console, "--export-nncf")
    if args.export_torch_ao:
        _write(args.export_torch_ao, json.dumps(torch_ao_mapping(result.resolved, profile.graph), indent=2), console, "--export-torch-ao")
    if args.out:
        from layerscope.profiler.capture.export import save_pt2

        save_pt2(result.candidate, result.inputs, args.out)
        console.print(f"Wrote {args.out}")
    if args.onnx:
        from layerscope.profiler.runtimes.onnx import export_onnx

        with atomic_path(args.onnx, "--onnx") as tmp:
            export_onnx(result.candidate, result.inputs, tmp)
        console.print(f"Wrote {args.onnx} (the compressed model as the torch copy computes it)")
    if args.model_explorer:  # the float model's graph, with each layer's output SQNR after compression beside its timing
        write_model_explorer_for(args.model_explorer, profile, kept[0], console,
                                 sqnr_db={c.layer_id: c.sqnr_db for c in result.comparison.layers if c.sqnr_db is not None},
                                 threshold_db=args.threshold, force=args.force)
    said_recorded(record, console)
    return 0


def add_compress_parser(sub) -> None:
    c = sub.add_parser("compress", help="apply a per-layer compression plan to a copy of the model and report the effect")
    ModelRequest.add_arguments(c, runs=10, device=False)  # compress measures on the CPU
    src = c.add_argument_group("what to apply (one of)")
    src.add_argument("--plan", help="CompressionPlan JSON (see README: selectors, techniques, parameters)")
    src.add_argument("--estimate", choices=list(ESTIMATES),
                     help="one-word plan over every conv/linear/embedding layer: a quick size and speed estimate")
    add_data_arguments(c)
    ort = c.add_mutually_exclusive_group()
    ort.add_argument("--ort-int8", action="store_true", help="also measure real int8 speed through ONNX Runtime's quantizer "
                                                            "(on by default for --estimate int8 and int8-weights)")
    ort.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime int8 measurement (the torch simulation only)")
    c.add_argument("--out", help="save the compressed model as a torch.export program (.pt2)")
    c.add_argument("--onnx", help="save the compressed model as ONNX")
    c.add_argument("--json", help="write the full report as JSON")
    c.add_argument("--save-plan", help="write the plan (e.g. the one --estimate built) as JSON")
    c.add_argument("--export-ort", help="write ONNX Runtime quantize_static/dynamic arguments (proven by running ORT's quantizer)")
    c.add_argument("--export-coreml", help="write coremltools.optimize.torch configs (module_name_configs)")
    c.add_argument("--export-torchao", help="write a torchao FqnToConfig (module path -> IntxWeightOnlyConfig / "
                                            "Int8DynamicActivationIntxWeightConfig; conv and embedding layers included by name); "
                                            "apply it with layerscope.profiler.compression.apply_torchao")
    c.add_argument("--export-nncf", help="write OpenVINO NNCF steps for the torch backend: nncf.quantize (preset) for int8 layers "
                                         "with int8 activations, nncf.compress_weights (mode, group size) for int8/int4 weights, "
                                         "each with an IgnoredScope keeping every other layer float (NNCF's own op names, read from its graph "
                                         "of the model when NNCF is installed); apply with "
                                         "layerscope.profiler.compression.apply_nncf")
    c.add_argument("--export-torch-ao", help="deprecated (torch.ao.quantization is deprecated in favour of torchao): write the "
                                             "torch.ao QConfigMapping (set_module_name entries)")
    c.add_argument("--model-explorer", metavar="FOLDER", help=ME_HELP)
    c.add_argument("--force", action="store_true", help=FORCE_HELP)
    c.add_argument("--workdir", help="keep the ORT float/int8 .onnx files in this folder (default: a scratch folder in "
                                    "LayerScope's cache, removed afterwards)")
    c.add_argument("--top", type=int, default=20, help="rows per table (default 20)")
    add_history_arguments(c)
    c.set_defaults(func=cmd_compress)

