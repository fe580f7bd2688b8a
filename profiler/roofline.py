"""Roofline classification: memory- or compute-bound from arithmetic intensity vs the ridge point,
and how close each layer's measured speed comes to its roof."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .hardware import HardwareProfile
from .metrics import LayerMetrics

__all__ = ["Bound", "RooflinePoint", "classify"]


class Bound(StrEnum):
    MEMORY = "memory-bound"
    COMPUTE = "compute-bound"
    NO_WORK = "no work"  # a view: no FLOPs and no bytes moved
    UNKNOWN = "unknown"  # no FLOP formula for this op


@dataclass(frozen=True)
class RooflinePoint:
    bound: Bound
    intensity: float | None  # FLOP/byte
    attained_gflops: float | None  # measured: FLOPs / median latency
    attained_gbs: float | None  # measured: bytes moved / median latency
    roof_gflops: float | None  # min(peak, intensity * bandwidth of the working set the layer's bytes fit: cache-aware)
    roof_fraction: float | None  # attained / roof (bandwidth fraction for FLOP-free copies)

    @property
    def above_roof(self) -> bool:
        """Faster than the roof allows: the roof is wrong (a calibration that read low), or a memory-bound
        layer's data came from cache. Never a plain percentage (``roof_text``)."""
        return self.roof_fraction is not None and self.roof_fraction > 1.0

    def roof_text(self) -> str:
        """The share of roof as shown everywhere: '-' when unknown, flagged with '!' above 100 %."""
        if self.roof_fraction is None:
            return "-"
        return f"{self.roof_fraction * 100:.0f}% !" if self.above_roof else f"{self.roof_fraction * 100:.0f}%"


def classify(m: LayerMetrics, latency_ms: float | None, hw: HardwareProfile, dtype: str = "float32",
             timed_on_target: bool = True) -> RooflinePoint:
    """Bound class from intensity vs ``hw``'s ridge point. ``roof_fraction`` only when the latency
    was measured on ``hw`` itself (``timed_on_target``): a datasheet roof for another device says
    nothing about how close this machine's timing came to it. Above 1.0 on a measured roof means
    the data was served from cache faster than the DRAM bandwidth that defines the roof."""
    seconds = latency_ms / 1e3 if latency_ms and latency_ms > 0 else None
    gbs = m.bytes_moved / seconds / 1e9 if seconds and m.bytes_moved else None
    if m.flops is None:
        return RooflinePoint(Bound.UNKNOWN, None, None, gbs, None, None)
    if m.flops == 0 and m.bytes_moved == 0:
        return RooflinePoint(Bound.NO_WORK, None, None, None, None, None)
    intensity = m.arithmetic_intensity  # the one definition; None here: FLOPs that move no bytes
    bound = Bound.COMPUTE if intensity is None or intensity >= hw.ridge_point(dtype) else Bound.MEMORY
    roof = hw.peak_for(dtype)[0] if intensity is None else hw.roof_gflops(intensity, dtype, m.bytes_moved)
    if m.flops == 0:  # pure data movement: judge against the bandwidth roof
        frac = gbs / hw.bandwidth_for(m.bytes_moved) if gbs and timed_on_target else None
        return RooflinePoint(bound, 0.0, 0.0, gbs, 0.0, frac)
    attained = m.flops / seconds / 1e9 if seconds else None
    frac = attained / roof if attained is not None and timed_on_target else None
    return RooflinePoint(bound, intensity, attained, gbs, roof, frac)
