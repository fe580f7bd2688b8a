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
from collections.abc import Collection
from dataclasses import dataclass

from ..graph import TensorRole
from ..profile import Profile
from .plan import ResolvedSpec
from .specs import CastParams, Granularity, PalettizeParams, PruneChannelsParams, PruneParams, QuantizeParams, TechniqueParams

__all__ = ["LayerEstimate", "PlanEstimate", "SelectionEstimate", "estimate_static"]


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

    def selection(self, layer_ids: Collection[str]) -> SelectionEstimate:
        """The estimate summed over the chosen layers (the app's selection)."""
        sel = [e for e in self.layers if e.layer_id in layer_ids]
        ib = sorted(e.intensity_before for e in sel if e.intensity_before)
        ia = sorted(e.intensity_after for e in sel if e.intensity_after)
        return SelectionEstimate(
            len(sel), sum(e.weight_bytes_before for e in sel), sum(e.weight_bytes_after for e in sel),
            sum(e.flops_before or 0 for e in sel), sum(e.flops_after or 0 for e in sel),
            sum(e.roof_ms_before or 0 for e in sel), sum(e.roof_ms_after or 0 for e in sel),
            ib[len(ib) // 2] if ib and ia else None, ia[len(ia) // 2] if ib and ia else None)


@dataclass(frozen=True)
class SelectionEstimate:
    """A plan's static estimate over some of its layers: sums, and the median arithmetic intensity."""

    layers: int
    weight_bytes_before: int
    weight_bytes_after: int
    flops_before: int
    flops_after: int
    roof_ms_before: float  # layers without a roof count 0
    roof_ms_after: float
    median_intensity_before: float | None  # FLOP/byte; None unless both sides have one
    median_intensity_after: float | None


def _storage_bits(p: TechniqueParams, shape: tuple[int, ...], bits_before: int) -> float:
    """Bits real storage needs for one weight tensor (the formulas ``techniques`` reports exactly)."""
    numel = math.prod(shape)
    out_ch = shape[0] if shape else 1
    if isinstance(p, QuantizeParams):
        groups = {Granularity.PER_TENSOR: 1, Granularity.PER_CHANNEL: out_ch,
                  Granularity.GROUP: numel // p.group_size}[p.granularity]
        return numel * p.bits + groups * (32 if p.symmetric else 32 + p.bits)
    if isinstance(p, CastParams):
        return numel * 16
    if isinstance(p, PalettizeParams):
        luts = out_ch // p.channels_per_lut if p.channels_per_lut else 1
        return numel * p.bits + luts * (2**p.bits) * 16
    if isinstance(p, PruneParams):
        return (numel - round(p.sparsity * numel)) * bits_before + numel
    if isinstance(p, PruneChannelsParams):
        return numel * (1 - p.amount) * bits_before
    return numel * bits_before


def estimate_static(profile: Profile, resolved: list[ResolvedSpec] | tuple[ResolvedSpec, ...]) -> PlanEstimate:
    hw, dtype = profile.hardware, profile.model.compute_dtype
    out, saved, fl_before, fl_after = [], 0, 0, 0
    approx: set[str] = set()
    counted: set[str] = set()  # weights already counted: a tied weight is one storage, saved once
    for r in resolved:
        layer, m = profile.graph[r.layer_id], profile.metrics[r.layer_id]
        before = after = 0
        shared = 0  # bytes this layer saves on a weight another chosen layer already saved
        for t in layer.operands:
            if t.role is not TensorRole.PARAMETER:
                continue
            storage = t.tied_to or t.name
            bits = t.itemsize * 8
            before += t.nbytes
            compress = t.name.endswith("weight") or r.technique == "prune_channels"
            t_after = math.ceil(_storage_bits(r.params, t.shape, bits) / 8) if compress else t.nbytes
            after += t_after
            if storage in counted:
                shared += t.nbytes - t_after
            counted.add(storage)
        flops_after = m.flops
        p = r.params
        if isinstance(p, PruneChannelsParams) and m.flops is not None:
            flops_after = round(m.flops * (1 - p.amount))
            approx.add("channel pruning: the pruned layer only; the layers reading its output shrink too")
        if isinstance(p, QuantizeParams) and p.activations:
            approx.add("int8 activations: weights only; activation traffic also drops in a real int8 kernel")
        moved_after = max(m.bytes_moved - (before - after), 0)
        out.append(LayerEstimate(
            r.layer_id, r.technique, before, after, m.flops, flops_after,
            m.arithmetic_intensity, (flops_after / moved_after) if flops_after is not None and moved_after else None,
            None if m.flops is None else hw.roof_ms(m.flops, m.bytes_moved, dtype),
            None if flops_after is None else hw.roof_ms(flops_after, moved_after, dtype)))
        saved += before - after - shared
        fl_before += m.flops or 0
        fl_after += flops_after or 0
    return PlanEstimate(tuple(out), profile.model.total_weight_bytes, saved, fl_before, fl_after, tuple(sorted(approx)))
