"""Per-layer sensitivity (AIMET-style): compress one layer at a time, everything else float, and
measure how much the model's output (and top-1, with labels) moves. The most sensitive layers are
the ones a mixed-precision recipe keeps at higher precision."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from ..compression.apply import compress_weight, output_leaves
from ..compression.plan import compressible_weights
from ..compression.specs import parse_params
from ..errorstats import PairStats
from ..files.data import SampleSet
from ..profile import Profile
from ..progress import Progress, Work
from ..resources import untouched

__all__ = ["LayerSensitivity", "sensitivity_ranking"]


@dataclass(frozen=True)
class LayerSensitivity:
    layer_id: str
    output_sqnr_db: float  # model output, this layer alone compressed vs float (inf: unchanged)
    top1_drop_points: float | None  # with labelled samples


def _top1_hits(out: torch.Tensor, y: torch.Tensor) -> int:
    return int((out.reshape(len(y), -1).argmax(1) == y).sum())


@torch.no_grad()
def sensitivity_ranking(module: torch.nn.Module, profile: Profile, samples: SampleSet, technique: str = "quantize",
                        bits: int = 4) -> Work[list[LayerSensitivity]]:
    """Every compressible layer, most sensitive first (lowest output SQNR; ties by larger top-1 drop)."""
    params = parse_params(technique, {"bits": bits})
    layers = [layer for layer in profile.graph if compressible_weights(layer)]
    model = copy.deepcopy(module).eval()
    with untouched(model):
        refs = [output_leaves(model(*b))[0][1] for b in samples.batches]
    base_hits = sum(_top1_hits(r, y) for r, y in zip(refs, samples.labels, strict=True)) if samples.labels else 0
    out: list[LayerSensitivity] = []
    yield Progress("sensitivity", 0, len(layers), f"{technique} {bits}-bit, one layer at a time")
    for i, layer in enumerate(layers):
        saved = []
        for meta in compressible_weights(layer):
            w = model.get_parameter(meta.name)
            saved.append((w, w.data.clone()))
            w.data.copy_(compress_weight(params, w.data, meta.name)[0])
        stats, hits = PairStats(), 0
        with untouched(model):
            for k, batch in enumerate(samples.batches):
                c = output_leaves(model(*batch))[0][1]
                stats.add(refs[k], c)
                if samples.labels:
                    hits += _top1_hits(c, samples.labels[k])
        for w, orig in saved:
            w.data.copy_(orig)
        drop = 100.0 * (base_hits - hits) / samples.n_samples if samples.labels else None
        out.append(LayerSensitivity(layer.id, stats.sqnr_db, drop))
        yield Progress("sensitivity", i + 1, len(layers), layer.id)
    return sorted(out, key=lambda s: (s.output_sqnr_db if not math.isnan(s.output_sqnr_db) else -math.inf,
                                      -(s.top1_drop_points or 0.0)))
