"""Benchmark: can the per-layer numbers be trusted on a busy machine? For each model, three profiles
quiet and three under a background load this script starts itself (``--load`` busy processes), then:

* fidelity: sum of per-layer medians / end-to-end median, per run;
* rank stability: Kendall tau of the top-10 layers between runs (same set, same order = 1.0), and
  whether the top-5 under load is the quiet top-5;
* what LayerScope said: threads used, warnings.

Not a test.  Run:  .venv/bin/python bench/fidelity.py [--models resnet50,mobilenet_v2] [--load 4] [--runs 10]
(add a BERT-base built from config with --bert when transformers is installed)
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import statistics
import time

from layerscope.profiler import drive
from layerscope.profiler.jobs import ModelRequest, profile_job


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _kendall_tau(a: list[str], b: list[str]) -> float:
    """Kendall tau over the layers both lists rank (a layer missing from one list counts as a discordance)."""
    common = [x for x in a if x in b]
    if len(common) < 2:
        return 0.0
    pos = {x: i for i, x in enumerate(b)}
    pairs = list(itertools.combinations(common, 2))
    concordant = sum((pos[x] < pos[y]) for x, y in pairs)
    tau = (2 * concordant - len(pairs)) / len(pairs)
    return tau * len(common) / len(a)


def _profiles(spec: str, n: int, runs: int, threads: int | None = None) -> list:
    return [drive(profile_job(ModelRequest(spec, runs=runs, warmup=3, threads=threads))) for _ in range(n)]


def _summary(label: str, profiles: list) -> list[list[str]]:
    tops = [[r.layer.id for r in p.ranked(10, steady_only=True)] for p in profiles]
    fid = [p.summary.fidelity for p in profiles]
    taus = [_kendall_tau(a, b) for a, b in itertools.combinations(tops, 2)]
    s = profiles[-1].summary
    between = f"top-10 Kendall tau between runs {min(taus):.2f}..{max(taus):.2f}" if taus else "one run"
    print(f"  {label:<6} fidelity {', '.join(f'{f:.1%}' for f in fid)}; {between}; {s.threads} thread(s), {s.runs} runs; "
          f"warnings: {len(s.warnings)}" + (f" ({s.warnings[0][:90]}…)" if s.warnings else ""))
    return tops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet50,mobilenet_v2")
    ap.add_argument("--load", type=int, default=4, help="busy processes started for the loaded runs")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for spec in args.models.split(","):
        print(spec)
        quiet = _summary("quiet", _profiles(spec, args.repeats, args.runs))
        quiet1 = _summary("quiet1", _profiles(spec, 1, args.runs, threads=1))  # what a busy machine is timed at
        stop = mp.Event()
        procs = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.load)]
        for p in procs:
            p.start()
        time.sleep(1.0)
        try:
            loaded = _summary("loaded", _profiles(spec, args.repeats, args.runs))
        finally:
            stop.set()
            for p in procs:
                p.join()
        for label, ref in (("quiet", quiet[0]), ("quiet at 1 thread", quiet1[0])):
            same5 = [len(set(t[:5]) & set(ref[:5])) for t in loaded]
            tau = statistics.mean(_kendall_tau(ref, t) for t in loaded)
            print(f"  {label} vs loaded: top-5 layers in common per run {same5} (of 5); top-10 Kendall tau {tau:.2f}")


if __name__ == "__main__":
    main()
