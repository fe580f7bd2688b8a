"""Benchmark: LayerScope's static profile (no timing) against fvcore's FlopCountAnalysis and torch's
FlopCounterMode under FakeTensorMode, on the same models, as ratios measured in one run (interleaved).

Not a test. Needs the bench extra (fvcore); BERT-base needs transformers (skipped without it).
Run:  .venv/bin/python bench/static_speed.py [--repeats 3] [--models resnet50,bert-base,decoder7b]

decoder7b is tests/decoder7b.py (Llama-2-7B shapes) on the meta device: fvcore and LayerScope run on meta
tensors, FlopCounterMode on fake tensors. MACs are printed too (FlopCounterMode reports FLOPs = 2 x MACs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from layerscope.profiler import HardwareProfile, drive, profile_model
from layerscope.profiler.files.source import LoadedModel, load_model

HW = HardwareProfile("bench roof", {"float32": 100.0}, 20.0, "fixed: the static path does not need a measured roof")


def _bert() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]] | None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import BertConfig, BertModel
    except ImportError:
        return None
    torch.manual_seed(0)
    return BertModel(BertConfig()).eval(), (torch.randint(0, 30522, (1, 128)),)


def _model(name: str) -> LoadedModel | None:
    if name == "bert-base":
        built = _bert()
        return None if built is None else LoadedModel("bert-base", "bert-base", "factory", built[0], built[1])
    if name == "decoder7b":
        return load_model(f"{Path(__file__).parents[1] / 'tests' / 'decoder7b.py'}:build")
    return load_model(name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet50,bert-base,decoder7b")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    try:
        import fvcore  # noqa: F401
    except ImportError:
        raise SystemExit('fvcore is not installed: .venv/bin/pip install -e ".[bench]"') from None

    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats}")
    for name in args.models.split(","):
        loaded = _model(name)
        if loaded is None:
            print(f"{name}: skipped (transformers not installed)")
            continue
        _compare(name, loaded, args.repeats)


def _compare(name: str, loaded: LoadedModel, repeats: int) -> None:
    from fvcore.nn import FlopCountAnalysis
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    model, inputs = loaded.module, loaded.inputs

    def fvcore_run() -> int:
        fca = FlopCountAnalysis(model, inputs)
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        fca.by_module()
        return fca.total()

    def flopcounter_run() -> int:
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake_inputs = tuple(mode.from_tensor(t) for t in inputs)
            counter = FlopCounterMode(display=False)
            with counter:
                model(*fake_inputs)
        return counter.get_total_flops() // 2

    def layerscope_run() -> int:
        return drive(profile_model(loaded, HW, static=True)).total_macs

    times: dict[str, list[float]] = {"fvcore": [], "FlopCounterMode": [], "LayerScope": []}
    macs: dict[str, int] = {}
    for _ in range(repeats):
        for label, fn in (("fvcore", fvcore_run), ("FlopCounterMode", flopcounter_run), ("LayerScope", layerscope_run)):
            t0 = time.perf_counter()
            try:
                macs[label] = int(fn())
            except Exception as exc:  # noqa: BLE001 - a peer that cannot run this model is reported, not fatal
                macs[label] = -1
                print(f"  {label} failed on {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}", file=sys.stderr)
            times[label].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{name}: " + ", ".join(f"{k} {med[k]:.2f} s ({macs[k] / 1e9:.2f} G MACs)" for k in times)
          + f"; LayerScope / fvcore {med['LayerScope'] / med['fvcore']:.2f}x, / FlopCounterMode "
          f"{med['LayerScope'] / med['FlopCounterMode']:.2f}x")


if __name__ == "__main__":
    main()
