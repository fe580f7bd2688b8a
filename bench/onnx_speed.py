"""Benchmark: ONNX Runtime vs PyTorch eager, per layer and in total, plus what the ONNX mapping
costs (export, session, profiling). Not a test.

Run:  .venv/bin/python bench/onnx_speed.py [--models resnet50 gpt_mini] [--runs 20] [--level all]

Both sides are measured in this one run on this machine. Eager per-layer times come from
LayerScope's profile; ORT per-layer times from ORT's own kernel profile mapped back to layers
(a fused kernel's time is split over its layers by their eager shares: an estimate, marked *).
"""

from __future__ import annotations

import argparse
import time
import warnings

from layerscope.profiler import drive, load_model, profile_model, resolve_hardware
from layerscope.profiler.runtimes.onnx import map_onnx


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet50", "gpt_mini"])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--level", default="all")
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    hw = drive(resolve_hardware(None))
    for name in args.models:
        loaded = load_model(name)
        t0 = time.perf_counter()
        prof = drive(profile_model(loaded, hw, runs=args.runs))
        eager_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        onnx = drive(map_onnx(loaded.module, loaded.inputs, prof.graph, opt_level=args.level, runs=args.runs, name=name))
        onnx_s = time.perf_counter() - t0
        eager = {lid: t.latency_ms for lid, t in prof.timings.items()}
        ort = onnx.layer_latency_ms(eager)
        e, o = prof.summary.end_to_end_ms, onnx.end_to_end_ms
        print(f"\n== {name}: {len(prof.graph)} layers, {len(onnx.ops)} ORT ops at level {args.level}, {args.runs} runs each")
        print(f"end-to-end  eager {e:8.2f} ms   ORT {o:8.2f} ms   ORT/eager {o / e:5.2f}x")
        print(f"coverage    {100 * onnx.coverage_ops:.1f}% of ops, {100 * onnx.coverage_time:.1f}% of op time mapped to layers")
        print(f"cost        LayerScope eager profile {eager_s:5.1f} s; ONNX export {onnx.export_seconds:.1f} s + session "
              f"{onnx.session_seconds:.2f} s + ORT profiling {onnx.profile_seconds:.2f} s = {onnx_s:.1f} s with mapping")
        print(f"{'layer (top by eager)':32} {'eager ms':>9} {'ORT ms*':>9} {'ratio':>7}")
        for lid in sorted(eager, key=eager.get, reverse=True)[: args.top]:
            r = ort.get(lid)
            print(f"{lid:32} {eager[lid]:9.3f} {('-' if r is None else f'{r:9.3f}'):>9} {('-' if r is None else f'{r / eager[lid]:6.2f}x'):>7}")


if __name__ == "__main__":
    main()
