"""Weight compression techniques, one interface: ``(weight, params) -> (reconstructed weight, WeightReport)``.

The reconstructed weight is what the compressed model computes with (simulated: stored values are
decoded back to the model's dtype), and ``WeightReport`` counts the bits real storage needs:

* quantize (int2–int8): ``numel·bits`` + one float32 scale per group (+ one ``bits``-wide zero
  point per group when asymmetric). Groups: the whole tensor (per_tensor), each output channel
  (per_channel), or ``group_size`` consecutive weights along the input dim of each channel (group).
* cast (float16/bfloat16): ``numel·16``.
* palettize (k-means, 1–8 bits): ``numel·bits`` indices + ``2**bits`` float16 LUT entries per LUT
  (one LUT per tensor, or per group of ``channels_per_lut`` output channels).
* prune (unstructured magnitude): non-zeros at the original width + a 1-bit-per-weight mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errorstats import sqnr_db

__all__ = ["WeightReport", "quantize_weight", "cast_weight", "palettize_weight", "prune_weight", "sqnr_db"]


@dataclass(frozen=True)
class WeightReport:
    name: str
    shape: tuple[int, ...]
    technique: str
    bits_before: int
    storage_bits: int  # everything real storage needs: codes, scales, zero points, LUTs, masks
    unique_values: int  # distinct values in the reconstructed weight (exact)
    nonzeros: int
    sqnr_db: float  # weight signal-to-quantisation-noise ratio

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def bits_per_weight(self) -> float:
        return self.storage_bits / self.numel if self.numel else 0.0

    @property
    def bytes_before(self) -> int:
        return self.numel * self.bits_before // 8

    @property
    def bytes_after(self) -> int:
        return math.ceil(self.storage_bits / 8)


def _unique_count(t: torch.Tensor, chunk: int = 1 << 22) -> int:
    """Exact number of distinct values, sorting one chunk at a time (a compressed weight has few)."""
    flat = t.reshape(-1)
    if flat.numel() <= chunk:
        return int(torch.unique(flat).numel())
    seen = torch.unique(torch.cat([torch.unique(flat[i:i + chunk]) for i in range(0, flat.numel(), chunk)]))
    return int(seen.numel())


def _report(name: str, w: torch.Tensor, w_hat: torch.Tensor, technique: str, storage_bits: int) -> WeightReport:
    return WeightReport(name, tuple(w.shape), technique, w.element_size() * 8, int(storage_bits),
                        _unique_count(w_hat), int(torch.count_nonzero(w_hat).item()), sqnr_db(w, w_hat))


def _groups(w: torch.Tensor, granularity: str, group_size: int) -> torch.Tensor:
    """View the weight as [n_groups, group_len] (rows are quantised independently)."""
    if granularity == "per_tensor":
        return w.reshape(1, -1)
    flat = w.reshape(w.shape[0], -1)  # per output channel
    if granularity == "per_channel":
        return flat
    if granularity == "group":
        cols = flat.shape[1]
        if cols % group_size:
            raise ValueError(f"group_size {group_size} does not divide the {cols} weights per channel")
        return flat.reshape(-1, group_size)
    raise ValueError(f"unknown granularity {granularity!r}")


@torch.no_grad()
def quantize_weight(w: torch.Tensor, bits: int = 8, symmetric: bool = True, granularity: str = "per_channel",
                    group_size: int = 32, name: str = "weight") -> tuple[torch.Tensor, WeightReport]:
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be 2–8, got {bits}")
    g = _groups(w.float(), granularity, group_size)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = (g.abs().amax(dim=1, keepdim=True) / qmax).clamp_min(torch.finfo(torch.float32).tiny)
        g_hat = (g / scale).round_().clamp_(-qmax, qmax).mul_(scale)  # in place: one weight-sized temporary
        meta_bits = g.shape[0] * 32
    else:
        qmax = 2**bits - 1
        lo, hi = g.amin(dim=1, keepdim=True), g.amax(dim=1, keepdim=True)
        scale = ((hi - lo) / qmax).clamp_min(torch.finfo(torch.float32).tiny)
        zero = torch.round(-lo / scale)
        g_hat = (g / scale).round_().add_(zero).clamp_(0, qmax).sub_(zero).mul_(scale)
        meta_bits = g.shape[0] * (32 + bits)
    w_hat = g_hat.reshape(w.shape).to(w.dtype)
    return w_hat, _report(name, w, w_hat, f"int{bits} {'sym' if symmetric else 'asym'} {granularity}", w.numel() * bits + meta_bits)


@torch.no_grad()
def cast_weight(w: torch.Tensor, dtype: str = "float16", name: str = "weight") -> tuple[torch.Tensor, WeightReport]:
    target = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    w_hat = w.to(target).to(w.dtype)
    return w_hat, _report(name, w, w_hat, dtype, w.numel() * 16)


def _kmeans_1d(x: torch.Tensor, k: int, iters: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on scalars: quantile init, assignment by bucketize over centroid midpoints."""
    xs = x.double()
    k = min(k, int(torch.unique(xs).numel()))
    centroids = torch.quantile(xs, torch.linspace(0, 1, k, dtype=torch.float64)) if xs.numel() > 1 else xs.clone()
    centroids = torch.unique(centroids)
    for _ in range(iters):
        mids = (centroids[1:] + centroids[:-1]) / 2
        idx = torch.bucketize(xs, mids)
        sums = torch.zeros_like(centroids).index_add_(0, idx, xs)
        counts = torch.zeros_like(centroids).index_add_(0, idx, torch.ones_like(xs))
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        new, _ = torch.sort(new)
        if torch.allclose(new, centroids):
            centroids = new
            break
        centroids = new
    mids = (centroids[1:] + centroids[:-1]) / 2
    return centroids, torch.bucketize(xs, mids)


@torch.no_grad()
def palettize_weight(w: torch.Tensor, bits: int = 4, channels_per_lut: int | None = None,
                     name: str = "weight") -> tuple[torch.Tensor, WeightReport]:
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1–8, got {bits}")
    k = 2**bits
    flat = w.float().reshape(w.shape[0], -1)
    step = channels_per_lut or flat.shape[0]
    if flat.shape[0] % step:
        raise ValueError(f"channels_per_lut {step} does not divide the {flat.shape[0]} output channels")
    out = torch.empty_like(flat)
    luts = 0
    for start in range(0, flat.shape[0], step):
        block = flat[start:start + step]
        centroids, idx = _kmeans_1d(block.reshape(-1), k)
        out[start:start + step] = centroids[idx].reshape(block.shape).float()
        luts += 1
    w_hat = out.reshape(w.shape).to(w.dtype)
    granularity = "per tensor" if luts == 1 else f"{luts} LUTs"
    return w_hat, _report(name, w, w_hat, f"palettize {bits}-bit {granularity}", w.numel() * bits + luts * k * 16)


@torch.no_grad()
def prune_weight(w: torch.Tensor, sparsity: float = 0.5, name: str = "weight") -> tuple[torch.Tensor, WeightReport]:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    n_zero = round(sparsity * w.numel())
    flat = w.reshape(-1)
    order = torch.argsort(flat.abs(), stable=True)  # ties broken by position: exactly n_zero zeros
    mask = torch.ones_like(flat, dtype=torch.bool)
    mask[order[:n_zero]] = False
    w_hat = torch.where(mask, flat, torch.zeros_like(flat)).reshape(w.shape)
    nnz = int(mask.sum().item())
    return w_hat, _report(name, w, w_hat, f"prune {sparsity:.0%} unstructured", nnz * w.element_size() * 8 + w.numel())
