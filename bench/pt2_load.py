"""Benchmark: what LayerScope's allowlist .pt2 reader costs against torch.export.load. Not a test.

Run:  .venv/bin/python bench/pt2_load.py [--models tiny_cnn resnet18 resnet50 vit_small gpt_mini] [--repeats 5]

For each model: torch.export of it saved once, then loaded ``--repeats`` times by each loader, interleaved
(reader, torch, reader, torch, …) so a busy machine slows both alike; medians and their ratio. Each load
includes ``.module()`` (the runnable module), as ``layerscope profile model.pt2`` needs it. Then the
pathological files of tests/crafted.py: time and peak traced memory until refusal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

from layerscope.profiler import load_model
from layerscope.profiler.errors import LayerScopeError
from layerscope.profiler.files.safeload import load_exported_program

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["tiny_cnn", "resnet18", "resnet50", "vit_small", "gpt_mini"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="pt2-bench-"))
    print(f"{'model':<14}{'reader s':>10}{'torch s':>10}{'reader/torch':>14}")
    for name in args.models:
        m = load_model(name)
        path = folder / f"{name}.pt2"
        torch.export.save(torch.export.export(m.module, m.inputs, strict=False), str(path))
        ours, theirs = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            load_exported_program(path)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            torch.export.load(str(path)).module()
            theirs.append(time.perf_counter() - t)
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"{name:<14}{a:>10.3f}{b:>10.3f}{a / b:>13.2f}×")
    import crafted

    base = crafted.base_program(folder / "base.pt2")
    print(f"\n{'pathological file':<24}{'refused in s':>14}{'peak MiB':>10}")
    for bomb in crafted.HANGS:
        evil = crafted.VARIANTS[bomb](base, folder / f"{bomb}.pt2", folder / "marker")
        tracemalloc.start()
        t = time.perf_counter()
        try:
            load_exported_program(evil)
        except LayerScopeError:
            pass
        seconds, peak = time.perf_counter() - t, tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"{bomb:<24}{seconds:>14.4f}{peak / 2**20:>10.2f}")


if __name__ == "__main__":
    main()
