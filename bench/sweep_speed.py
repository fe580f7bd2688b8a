"""Benchmark: how many candidates per minute a sweep measures, and what the pool and Ray cost. Not a test.

Run:  .venv/bin/python bench/sweep_speed.py [--models digits_cnn resnet18] [--ray]

For each model, in this one run on this machine, the same grid of recipes (no ORT measurement, the
reference profile and sensitivity ranking taken once beforehand and reused from the history):
* candidates per minute with 1 worker (in process) and 2 workers (local process pool);
* with --ray: 2 Ray actors on a local instance, and its overhead against the local pool.
Wall time includes starting the workers (each loads the model once), which is part of what a user waits for.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from layerscope.profiler import drive
from layerscope.profiler.request import ModelRequest
from layerscope.profiler.resources import other_load_now
from layerscope.profiler.sweep import Budgets, SearchSpace, SweepOptions, run_sweep

SPACE = {"techniques": {"quantize": {"bits": [8, 4]}, "palettize": {"bits": [4]}, "prune": {"sparsity": [0.5]}},
         "layers": ["all", "top:3"], "mixed": None}


def one(model: str, workers: int, ray: str | None, db: str, runs: int) -> tuple[float, int]:
    opts = SweepOptions(Budgets(max_size_ratio=0.3), SearchSpace.from_dict(SPACE), workers=workers, ray=ray, history=db, ort=False)
    stages: dict[str, float] = {}
    last = [time.perf_counter()]

    def on(p) -> None:
        now = time.perf_counter()
        stages[p.stage] = stages.get(p.stage, 0.0) + now - last[0]
        last[0] = now

    res = drive(run_sweep(ModelRequest(model, runs=runs, warmup=2, hardware="raspberry-pi-5"), opts), on)
    return stages.get("workers", 0.0) + stages.get("sweep", 0.0), len(res.candidates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["digits_cnn", "resnet18"])
    ap.add_argument("--runs", type=int, default=10, help="timed runs per candidate (default 10)")
    ap.add_argument("--ray", action="store_true", help="also measure 2 Ray actors on a local instance")
    args = ap.parse_args()
    print(f"other load before: {other_load_now():.0%} of the CPUs")
    for model in args.models:
        with tempfile.TemporaryDirectory() as d:
            db = f"{d}/h.sqlite"
            one(model, 1, None, db, args.runs)  # reference profile + warm caches, not counted
            rows = [("1 worker (in process)", *one(model, 1, None, db, args.runs)),
                    ("2 workers (local pool)", *one(model, 2, None, db, args.runs))]
            if args.ray:
                rows.append(("2 Ray actors (local)", *one(model, 2, "", db, args.runs)))
        base = rows[0][1] / rows[0][2]
        print(f"\n{model}: {rows[0][2]} candidates each")
        for name, secs, n in rows:
            print(f"  {name:<24} {secs:7.1f} s  {n / secs * 60:7.1f} candidates/min  ({secs / n / base:.2f}x the time per candidate "
                  f"of 1 worker)")
        if args.ray:
            print(f"  Ray overhead vs the local pool: {rows[2][1] / rows[1][1]:.2f}x the wall time")
    print(f"\nother load after: {other_load_now():.0%} of the CPUs")


if __name__ == "__main__":
    main()
