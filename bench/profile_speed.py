"""Benchmark: how long LayerScope takes to profile ResNet-50 (batch 1) against fvcore's
FlopCountAnalysis(...).by_module() on the same model, as ratios measured in one run.

Not a test. Needs the bench extra:  .venv/bin/pip install -e ".[bench]"
Run:  .venv/bin/python bench/profile_speed.py [--model resnet50] [--repeats 3] [--runs 20]

Two comparisons, interleaved repeat by repeat so machine noise hits both sides alike:
  * static: LayerScope capture + per-layer FLOPs/bytes (what fvcore does: no timing) vs fvcore
  * full:   LayerScope's whole profile (capture, metrics, --runs timed runs, roofline) vs fvcore
It also prints the totals both tools count and LayerScope's fidelity line.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from layerscope.profiler import drive, load_model, profile_model, resolve_hardware
from layerscope.profiler.capture import capture
from layerscope.profiler.metrics import layer_metrics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        raise SystemExit('fvcore is not installed: .venv/bin/pip install -e ".[bench]"') from None

    loaded = load_model(args.model)
    model, inputs = loaded.module, loaded.inputs
    hw = drive(resolve_hardware(None))  # calibrated once and cached; not part of the timed work

    def fvcore_run():
        fca = FlopCountAnalysis(model, inputs)
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return fca, fca.by_module()

    def static_run():
        cap = capture(model, inputs)
        return cap, [layer_metrics(layer) for layer in cap.graph]

    def full_run():
        return drive(profile_model(loaded, hw, runs=args.runs, warmup=3))

    with torch.inference_mode():
        model(*inputs)  # warm the allocator and kernels for everyone
    t_fv, t_static, t_full = [], [], []
    for _ in range(args.repeats):
        for fn, sink in ((fvcore_run, t_fv), (static_run, t_static), (full_run, t_full)):
            t0 = time.perf_counter()
            result = fn()
            sink.append(time.perf_counter() - t0)
            if fn is fvcore_run:
                fca = result[0]
            elif fn is full_run:
                profile = result
    fv, st, fu = (statistics.median(x) for x in (t_fv, t_static, t_full))
    s = profile.summary
    print(f"model {args.model}, batch 1, {torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats}")
    print(f"fvcore FlopCountAnalysis.by_module : {fv:8.3f} s")
    print(f"LayerScope static (capture+FLOPs)  : {st:8.3f} s   ratio vs fvcore {st / fv:6.2f}x")
    print(f"LayerScope full profile ({args.runs} runs)  : {fu:8.3f} s   ratio vs fvcore {fu / fv:6.2f}x")
    print(f"totals: fvcore {fca.total() / 1e9:.4f} G (its 'flops' are MACs for conv/linear); "
          f"LayerScope {profile.total_macs / 1e9:.4f} G MACs, {profile.total_flops / 1e9:.4f} G FLOPs, "
          f"{len(profile.unknown_layers)} unknown layers")
    print(f"fidelity: sum of per-layer medians {s.sum_of_layer_medians_ms:.2f} ms vs end-to-end {s.end_to_end_ms:.2f} ms "
          f"= {100 * s.fidelity:.1f}% ({s.runs} runs, IQR {s.end_to_end_p25_ms:.2f}-{s.end_to_end_p75_ms:.2f} ms)")


if __name__ == "__main__":
    main()
