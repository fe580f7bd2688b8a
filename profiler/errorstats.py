"""Reference vs candidate error, the one place SQNR, MSE and cosine are computed: streamed over
batches (``PairStats``) or for one pair of tensors (``sqnr_db``)."""

from __future__ import annotations

import math

import torch

__all__ = ["PairStats", "sqnr_db"]


class PairStats:
    def __init__(self) -> None:
        self.n = 0
        self.err2 = 0.0
        self.ref2 = 0.0
        self.cand2 = 0.0
        self.dot = 0.0
        self.max_abs = 0.0

    CHUNK = 1 << 20  # elements per float64 pass: temporaries stay ~8 MiB each, whatever the tensor size

    def add(self, ref: torch.Tensor, cand: torch.Tensor) -> None:
        rf, cf = ref.detach().reshape(-1), cand.detach().reshape(-1)
        self.n += rf.numel()
        for i in range(0, rf.numel(), self.CHUNK):
            r, c = rf[i:i + self.CHUNK].double(), cf[i:i + self.CHUNK].double()
            d = r - c
            self.err2 += d.pow(2).sum().item()
            self.ref2 += r.pow(2).sum().item()
            self.cand2 += c.pow(2).sum().item()
            self.dot += (r * c).sum().item()
            self.max_abs = max(self.max_abs, d.abs().max().item())

    @property
    def sqnr_db(self) -> float:
        if self.n == 0 or math.isnan(self.err2):
            return math.nan  # nothing compared, or NaN in the data: no number is honest
        if self.err2 == 0:
            return math.inf
        return 10 * math.log10(self.ref2 / self.err2) if self.ref2 > 0 else -math.inf

    @property
    def mse(self) -> float:
        return self.err2 / self.n if self.n else float("nan")

    @property
    def cosine(self) -> float:
        if self.n == 0:
            return math.nan
        den = math.sqrt(self.ref2 * self.cand2)
        return self.dot / den if den > 0 else (1.0 if self.err2 == 0 else float("nan"))


def sqnr_db(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """10·log10(signal energy / error energy); inf when identical."""
    p = PairStats()
    p.add(reference, candidate)
    return p.sqnr_db
