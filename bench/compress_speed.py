"""Benchmark: what compression buys and what it costs. Not a test.

Run:  .venv/bin/python bench/compress_speed.py [--models digits_cnn resnet18 mobilenet_v2] [--runs 20]

For each model, in this one run on this machine:
* real int8 speed: ONNX Runtime float vs int8 (quantize_static, the plan's ORT adapter), interleaved;
* structured pruning speed: eager reference vs channel-pruned candidate (50% of every conv that is
  not an output layer), interleaved;
* the cost of each weight technique over every conv/linear weight (apply time, relative to int8);
* the cost of `compare` (both models, node by node, streaming stats for every layer) relative to
  plain eager forwards of both models over the same samples.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from layerscope.profiler import drive, load_model, profile_model, resolve_hardware
from layerscope.profiler.compare import compare_models
from layerscope.profiler.compression import CompressionPlan, LayerSpec, apply_plan, compress, resolve_plan
from layerscope.profiler.files.data import samples_for

TECHNIQUES = {
    "int8 per-channel": ("quantize", {"bits": 8}),
    "int4 per-channel": ("quantize", {"bits": 4}),
    "palettize 4-bit": ("palettize", {"bits": 4}),
    "prune 50%": ("prune", {"sparsity": 0.5}),
    "float16": ("cast", {"dtype": "float16"}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["digits_cnn", "resnet18", "mobilenet_v2"])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    hw = drive(resolve_hardware(None))
    for name in args.models:
        loaded = load_model(name)
        samples = samples_for(loaded, None, 4)
        profile = drive(profile_model(loaded, hw, runs=5, warmup=2))
        print(f"\n== {name} ({samples.source})")
        int8 = CompressionPlan((LayerSpec("all", "quantize", {"bits": 8, "activations": True}),))
        t0 = time.perf_counter()
        out = out_int8 = drive(compress(loaded, profile, int8, samples, hw, runs=args.runs, ort_int8=True))
        r = out.report
        o = r.ort
        acc = (f", top-1 {r.output.accuracy_reference:.4f} -> {r.output.accuracy_candidate:.4f} (torch fake-quant), "
               f"{o.accuracy_float:.4f} -> {o.accuracy_int8:.4f} (ORT)") if o.accuracy_float is not None else ""
        print(f"int8 all: size x{r.size_ratio:.3f}; ORT float {o.float_ms:.3f} ms vs int8 {o.int8_ms:.3f} ms = "
              f"speed-up {o.speedup:.2f}x (batch {o.batch_size}, {o.runs} runs); output SQNR torch {r.output.sqnr_db:.1f} dB, "
              f"ORT {o.output_sqnr_db:.1f} dB{acc}; whole job {time.perf_counter() - t0:.1f} s")
        convs = [lid for lid in profile.graph.ids() if profile.graph[lid].op_kind == "conv" and lid not in profile.graph.output_layers]
        if convs:
            plan = CompressionPlan(tuple(LayerSpec(c, "prune_channels", {"amount": 0.5}) for c in convs))
            out = drive(compress(loaded, profile, plan, samples, hw, runs=args.runs))
            r = out.report
            print(f"prune 50% channels of {len(convs)} convs: FLOPs x{r.flops_after / r.flops_before:.3f}, size "
                  f"x{r.size_ratio:.3f}, eager {r.latency_ms_before:.3f} -> {r.latency_ms_after:.3f} ms = "
                  f"x{r.latency_ratio:.2f} (interleaved, {r.latency_runs} runs); output cosine {r.output.cosine:.3f} "
                  f"(no fine-tuning)")
        t0 = time.perf_counter()
        with torch.inference_mode():
            for batch in samples.batches:
                loaded.module(*batch)
                out_int8.candidate(*batch)
        plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        cmp = drive(compare_models(loaded.module, out_int8.candidate, samples))
        dt = time.perf_counter() - t0
        print(f"compare {len(cmp.layers)} layers on {samples.n_samples} samples: {dt:.2f} s = x{dt / plain:.1f} of plain forwards "
              f"of both models ({plain:.3f} s)")
        base = None
        for label, (tech, params) in TECHNIQUES.items():
            resolved, w = resolve_plan(CompressionPlan((LayerSpec("all", tech, params),)), profile)
            t0 = time.perf_counter()
            _, res = drive(apply_plan(loaded.module, profile.graph, resolved, samples, w))
            dt = time.perf_counter() - t0
            base = base or dt
            print(f"  {label:<17} apply {dt:6.2f} s (x{dt / base:5.2f} of int8)  size x{res.size_ratio:.3f}  "
                  f"output SQNR {res.output.sqnr_db:6.1f} dB")


if __name__ == "__main__":
    main()
