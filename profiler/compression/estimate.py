"""Static estimate of a compression plan: weight storage, FLOPs and roofline position per layer,
from shapes alone, in milliseconds — shown the moment a selection or technique changes, before the
measured numbers of an Apply arrive (paper 6.2: see the effect of a choice at once).

Storage uses the same accounting as the techniques themselves (codes, scales, LUTs, masks), so for
weight quantisation, palettisation, casting and unstructured pruning the estimate equals what Apply
reports. Channel pruning is estimated for the pruned layer only (its consumers shrink too). Latency
is *not* estimated as a number: only the roof bound (the fastest the roof allows) moves, and the
layer's measured latency is needed to say more — that is what Apply measures."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..graph import TensorRole
from ..report import Profile
from .plan import ResolvedSpec

__all__ = ["LayerEstimate", "PlanEstimate", "estimate_static"]


@dataclass(frozen=True)
class LayerEstimate:
    layer_id: str
    technique: str
    weight_bytes_before: int
    weight_bytes_after: int
    flops_before: int | None
    flops_after: int | None
    intensity_before: float | None  # FLOP/byte
    intensity_after: float | None
    roof_ms_before: float | None  # the fastest the roof allows: max(FLOPs/peak, bytes/bandwidth)
    roof_ms_after: float | None


@dataclass(frozen=True)
class PlanEstimate:
    layers: tuple[LayerEstimate, ...]
    model_weight_bytes: int
    weight_bytes_saved: int
    flops_before: int
    flops_after: int
    approximate: tuple[str, ...]  # what is not exact

    @property
    def size_ratio(self) -> float:
        m = self.model_weight_bytes
        return (m - self.weight_bytes_saved) / m if m else float("nan")


def _storage_bits(technique: str, params: dict, shape: tuple[int, ...], bits_before: int) -> float:
    numel = math.prod(shape)
    out_ch = shape[0] if shape else 1
    if technique == "quantize":
        bits = int(params.get("bits", 8))
        gran = params.get("granularity", "per_channel")
        groups = 1 if gran == "per_tensor" else (numel // int(params.get("group_size", 32)) if gran == "group" else out_ch)
        meta = 32 if params.get("symmetric", True) else 32 + bits
        return numel * bits + groups * meta
    if technique == "cast":
        return numel * 16
    if technique == "palettize":
        bits = int(params.get("bits", 4))
        luts = out_ch // int(params["channels_per_lut"]) if params.get("channels_per_lut") else 1
        return numel * bits + luts * (2**bits) * 16
    if technique == "prune":
        nnz = numel - round(float(params.get("sparsity", 0.5)) * numel)
        return nnz * bits_before + numel
    if technique == "prune_channels":
        return numel * (1 - float(params.get("amount", 0.25))) * bits_before
    return numel * bits_before


def estimate_static(profile: Profile, resolved: list[ResolvedSpec] | tuple[ResolvedSpec, ...]) -> PlanEstimate:
    hw, dtype = profile.hardware, profile.model.compute_dtype
    out, saved, fl_before, fl_after = [], 0, 0, 0
    approx: set[str] = set()
    for r in resolved:
        layer, m = profile.graph[r.layer_id], profile.metrics[r.layer_id]
        before = after = 0
        for t in layer.operands:
            if t.role is not TensorRole.PARAMETER:
                continue
            bits = t.itemsize * 8
            before += t.nbytes
            compress = t.name.endswith("weight") or r.technique == "prune_channels"
            after += math.ceil(_storage_bits(r.technique, r.params, t.shape, bits) / 8) if compress else t.nbytes
        flops_after = m.flops
        if r.technique == "prune_channels" and m.flops is not None:
            flops_after = round(m.flops * (1 - float(r.params.get("amount", 0.25))))
            approx.add("channel pruning: the pruned layer only; the layers reading its output shrink too")
        if r.params.get("activations"):
            approx.add("int8 activations: weights only; activation traffic also drops in a real int8 kernel")
        moved_after = max(m.bytes_moved - (before - after), 0)
        out.append(LayerEstimate(
            r.layer_id, r.technique, before, after, m.flops, flops_after,
            m.arithmetic_intensity, (flops_after / moved_after) if flops_after is not None and moved_after else None,
            None if m.flops is None else hw.roof_ms(m.flops, m.bytes_moved, dtype),
            None if flops_after is None else hw.roof_ms(flops_after, moved_after, dtype)))
        saved += before - after
        fl_before += m.flops or 0
        fl_after += flops_after or 0
    return PlanEstimate(tuple(out), profile.model.total_weight_bytes, saved, fl_before, fl_after, tuple(sorted(approx)))
