"""Benchmark: is the calibrated roof really the roof? Calibrates this machine (not cached), profiles
models, and compares the roof with the fastest conv/linear layer each model attains (the roof must be
at least that) and with the theoretical peak from the ISA and clock.

Not a test.  Run:  .venv/bin/python bench/calibration.py [--models resnet18,resnet50,mobilenet_v2] [--runs 10]
"""

from __future__ import annotations

import argparse
import time

import torch

from layerscope.profiler import drive, load_model, profile_model
from layerscope.profiler.hardware import calibrate, theoretical_cpu_gflops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet18,resnet50,mobilenet_v2")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    t0 = time.perf_counter()
    hw = drive(calibrate())
    took = time.perf_counter() - t0
    peak = hw.peak_gflops["float32"]
    print(f"calibration: {took:.1f} s, float32 roof {peak:.1f} GFLOP/s, DRAM {hw.bandwidth_gbs:.1f} GB/s "
          f"({', '.join(f'{k} {v:.1f}' for k, v in hw.bandwidths_gbs.items())})")
    for k, v in hw.details.items():
        if k.startswith(("kernel float32", "bandwidth copy moving")):
            print(f"  {k}: {v}")
    theory = theoretical_cpu_gflops(torch.get_num_threads())
    print(f"  theoretical: {f'{theory[0]:.0f} GFLOP/s ({theory[1]})' if theory else 'not readable here'}"
          + (f"; measured / theoretical = {peak / theory[0]:.2f}" if theory else ""))
    for note in hw.notes:
        print(f"  note: {note}")
    print(f"{'model':<14} {'best conv/linear attained':>26} {'roof':>8} {'best/roof':>10} {'layers > roof':>14}")
    for name in args.models.split(","):
        p = drive(profile_model(load_model(name), hw, runs=args.runs, warmup=3))
        pts = [(lid, pt) for lid, pt in p.roofline.items()
               if p.graph[lid].op_kind in ("conv", "linear") and pt.attained_gflops is not None]
        lid, best = max(pts, key=lambda kv: kv[1].attained_gflops or 0.0)
        print(f"{name:<14} {best.attained_gflops:>17.1f} GFLOP/s ({lid}) {peak:>8.1f} {(best.attained_gflops or 0) / peak:>10.2f} "
              f"{len(p.above_roof()):>14}")


if __name__ == "__main__":
    main()
