"""Static int8 activation quantisation, simulated (fake-quant), with calibration.

The input of each chosen layer is quantised per tensor, asymmetric int8 ([-128, 127] with a zero
point), as ONNX Runtime's QDQ format does for the inputs of a quantised Conv/MatMul. The range is
calibrated on sample inputs:

* ``minmax``: the observed minimum and maximum;
* ``percentile``: the ``act_percentile`` and ``100 - act_percentile`` percentiles of the values
  (clips outliers);
* ``mse``: the clipping range, shrunk from min/max in 64 steps, that minimises the mean squared
  quantisation error on the calibration values.

The range always contains 0, so zero padding and ReLU zeros are exact. Min/max are exact over all
values; percentile and MSE work on a seeded random subsample of at most 2**20 values per layer (once
full, each new batch overwrites a random stored chunk), so calibration memory stays bounded however
many samples are given.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ActivationQuant", "FakeQuantInput", "calibrate_activations", "fake_quant", "quant_range", "clipped"]

QMIN, QMAX = -128, 127
_MAX_SAMPLES = 1 << 20


@dataclass(frozen=True)
class ActivationQuant:
    layer_id: str
    calibration: str
    observed_min: float
    observed_max: float
    range_min: float  # the calibrated (possibly clipped) range
    range_max: float
    scale: float
    zero_point: int
    clip_rate: float  # fraction of calibration values outside the range
    sqnr_db: float  # of the fake-quantised calibration values


class FakeQuantInput:
    """Forward pre-hook: fake-quantise a layer's first input to int8 with a fixed scale/zero point."""

    def __init__(self, scale: float, zero_point: int) -> None:
        self.scale = scale
        self.zero_point = zero_point

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            return args
        return (fake_quant(x, self.scale, self.zero_point), *args[1:])


def fake_quant(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    q = torch.clamp(torch.round(x / scale) + zero_point, QMIN, QMAX)
    return ((q - zero_point) * scale).to(x.dtype)


def quant_range(scale: float, zero_point: int) -> tuple[float, float]:
    """The real-valued range an int8 (scale, zero point) represents."""
    return (QMIN - zero_point) * scale, (QMAX - zero_point) * scale


def clipped(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Which values of ``x`` fall outside that range by more than half a step (they would saturate)."""
    lo, hi = quant_range(scale, zero_point)
    return (x < lo - scale / 2) | (x > hi + scale / 2)


def _qparams(lo: float, hi: float) -> tuple[float, int]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / (QMAX - QMIN) if hi > lo else 1.0
    zero_point = int(round(QMIN - lo / scale))
    return scale, max(QMIN, min(QMAX, zero_point))


class _Observer:
    def __init__(self, seed: int) -> None:
        self.lo, self.hi = math.inf, -math.inf
        self.samples: list[torch.Tensor] = []
        self.kept = 0
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0]
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            return
        flat = x.detach().float().reshape(-1)
        self.lo, self.hi = min(self.lo, flat.min().item()), max(self.hi, flat.max().item())
        room = _MAX_SAMPLES - self.kept
        if room <= 0:  # reservoir full: replace a random share, keeping the sample uniform enough
            pick = flat[torch.randint(flat.numel(), (min(flat.numel(), _MAX_SAMPLES // 8),), generator=self.gen)]
            self.samples[int(torch.randint(len(self.samples), (1,), generator=self.gen))] = pick
            return
        if flat.numel() > room:
            flat = flat[torch.randperm(flat.numel(), generator=self.gen)[:room]]
        self.samples.append(flat.clone())
        self.kept += flat.numel()


def _range(values: torch.Tensor, lo: float, hi: float, method: str, percentile: float) -> tuple[float, float]:
    if method == "minmax":
        return lo, hi
    if method == "percentile":
        q = torch.quantile(values.double(), torch.tensor([1 - percentile / 100, percentile / 100], dtype=torch.float64))
        return float(q[0]), float(q[1])
    best, best_err = (lo, hi), math.inf
    for frac in torch.linspace(1.0, 0.05, 64).tolist():  # mse
        a, b = lo * frac, hi * frac
        scale, zp = _qparams(a, b)
        err = (fake_quant(values, scale, zp) - values).pow(2).mean().item()
        if err < best_err:
            best, best_err = (a, b), err
    return best


@torch.no_grad()
def calibrate_activations(model: nn.Module, layers: Sequence[tuple[str, str, str, float]],
                          batches: Iterable[Sequence[torch.Tensor]]) -> list[ActivationQuant]:
    """Observe the inputs of ``layers`` (layer id, module path, method, percentile) over ``batches``,
    then attach a FakeQuantInput hook to each. ``model`` is changed in place."""
    from ..errorstats import sqnr_db

    observers = []
    for k, (_, path, _, _) in enumerate(layers):
        obs = _Observer(seed=k)
        observers.append((obs, model.get_submodule(path).register_forward_pre_hook(obs)))
    try:
        for batch in batches:
            model(*batch)
    finally:
        for _, handle in observers:
            handle.remove()
    out = []
    for (layer_id, path, method, percentile), (obs, _) in zip(layers, observers, strict=True):
        if not obs.samples:
            raise ValueError(f"layer {layer_id!r} never received a floating-point input on the calibration data")
        values = torch.cat(obs.samples)
        lo, hi = _range(values, obs.lo, obs.hi, method, percentile)
        scale, zp = _qparams(lo, hi)
        lo_q, hi_q = quant_range(scale, zp)
        clip = clipped(values, scale, zp).double().mean().item()
        model.get_submodule(path).register_forward_pre_hook(FakeQuantInput(scale, zp))
        out.append(ActivationQuant(layer_id, method, obs.lo, obs.hi, lo_q, hi_q, scale, zp, clip,
                                   sqnr_db(values, fake_quant(values, scale, zp))))
    return out
