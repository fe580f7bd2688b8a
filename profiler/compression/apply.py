"""Apply a resolved plan to a copy of the model (the original is never modified) and report the
effect: storage per layer and in total, and the change in the model's output (and accuracy when
the samples are labelled).

Order: structural channel pruning (Torch-Pruning), then weight techniques on the pruned weights,
then activation calibration on the weight-compressed model (so each range sees what the layer will
really receive). Any error raises PlanError before the caller sees a model: nothing half-applied.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data import SampleSet
from ..errors import InputSpecError, PlanError
from ..errorstats import PairStats
from ..graph import LayerGraph
from ..progress import Progress, Work
from ..resources import release_memory, untouched
from ..weights import weight_bytes
from .activations import ActivationQuant, calibrate_activations
from .plan import ResolvedSpec
from .specs import CastParams, PalettizeParams, PruneChannelsParams, PruneParams, QuantizeParams, TechniqueParams
from .structured import ChannelPruneReport, prune_channels
from .techniques import WeightReport, cast_weight, palettize_weight, prune_weight, quantize_weight

__all__ = ["LayerCompression", "CompressionResult", "OutputChange", "apply_plan", "pruned_copy", "compare_outputs", "model_bytes"]



def _compress_weight(p: TechniqueParams, w: torch.Tensor, name: str) -> tuple[torch.Tensor, WeightReport]:
    if isinstance(p, QuantizeParams):
        return quantize_weight(w, p.bits, p.symmetric, p.granularity, p.group_size, name=name)
    if isinstance(p, CastParams):
        return cast_weight(w, p.dtype, name=name)
    if isinstance(p, PalettizeParams):
        return palettize_weight(w, p.bits, p.channels_per_lut, name=name)
    if isinstance(p, PruneParams):
        return prune_weight(w, p.sparsity, name=name)
    raise TypeError(f"{type(p).__name__} is not a weight technique")


@dataclass(frozen=True)
class LayerCompression:
    layer_id: str
    spec_index: int
    weight: WeightReport


@dataclass(frozen=True)
class OutputChange:
    """Model output, reference (original) vs candidate (compressed), over every sample."""
    samples: int
    data_source: str
    sqnr_db: float  # inf when identical
    cosine: float
    max_abs_error: float
    accuracy_reference: float | None  # top-1, when the samples are labelled
    accuracy_candidate: float | None


@dataclass(frozen=True)
class CompressionResult:
    layers: tuple[LayerCompression, ...]  # weight techniques
    channels: tuple[ChannelPruneReport, ...]  # structural pruning
    activations: tuple[ActivationQuant, ...]  # int8 activation fake-quant
    model_bytes_before: int  # all distinct parameters and buffers, as stored
    model_bytes_after: int  # same, with compressed weights at their real storage size
    output: OutputChange
    warnings: tuple[str, ...]
    # True when weights/activations are fake-quantised: storage sizes are real, but the kernels
    # still run in float, so measured latency does not show the int8 speed-up (see the ORT check).
    simulated: bool

    @property
    def size_ratio(self) -> float:
        return self.model_bytes_after / self.model_bytes_before if self.model_bytes_before else float("nan")


def model_bytes(model: nn.Module) -> int:
    """All distinct parameter and buffer storages, as stored (``weights.weight_bytes``)."""
    return weight_bytes(model).total


def _flat_output(out: Any) -> torch.Tensor:
    """The model's first output tensor (of a tuple, list or dict output)."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if not isinstance(out, torch.Tensor):
        raise InputSpecError(f"The model's first output is a {type(out).__name__}, not a tensor; no comparison is possible.")
    return out.detach().float()


@torch.no_grad()
def compare_outputs(reference: nn.Module, candidate: nn.Module, samples: SampleSet) -> OutputChange:
    if samples.n_samples == 0:
        raise InputSpecError(f"{samples.source}: no samples to compare the outputs on.")
    err, hits_r, hits_c = PairStats(), 0, 0
    for k, batch in enumerate(samples.batches):
        with untouched(reference), untouched(candidate):
            r, c = _flat_output(reference(*batch)), _flat_output(candidate(*batch))
        if not torch.isfinite(r).all():
            raise InputSpecError(f"The original model's output holds NaN/Inf on batch {k} of {samples.source}; "
                                 f"no comparison is meaningful. Check the data and the model.")
        if samples.labels is not None:
            y = samples.labels[k]
            hits_r += int((r.reshape(len(y), -1).argmax(1) == y).sum())
            hits_c += int((c.reshape(len(y), -1).argmax(1) == y).sum())
        err.add(r, c)
    n = samples.n_samples
    labelled = samples.labels is not None
    cos = err.cosine
    return OutputChange(n, samples.source, err.sqnr_db, cos if math.isfinite(cos) else float("nan"), err.max_abs,
                        hits_r / n if labelled else None, hits_c / n if labelled else None)


def pruned_copy(model: nn.Module, graph: LayerGraph, resolved: list[ResolvedSpec],
                inputs: tuple[torch.Tensor, ...]) -> tuple[nn.Module, list[ChannelPruneReport]]:
    """A deep copy of ``model`` with the plan's structural specs (channel pruning) applied, weights
    still float: the model an ONNX Runtime int8 export starts from, and the first step of
    ``apply_plan``. Without structural specs it is a plain copy."""
    candidate = copy.deepcopy(model).eval()
    targets = [(r.layer_id, graph[r.layer_id].module_path or "", r.spec_index, r.params.amount, str(r.params.norm))
               for r in resolved if isinstance(r.params, PruneChannelsParams)]
    return candidate, prune_channels(candidate, inputs, targets) if targets else []


def _storage(t: torch.Tensor) -> tuple[str, int]:
    ptr = t.untyped_storage().data_ptr()
    return (str(t.device), ptr) if ptr else ("id", id(t))


def _ties(model: nn.Module) -> dict[tuple[str, int], list[str]]:
    """Parameter names per storage, for storages held under more than one name (tied weights)."""
    names: dict[tuple[str, int], list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(_storage(p), []).append(name)
    return {k: v for k, v in names.items() if len(v) > 1}


def apply_plan(model: nn.Module, graph: LayerGraph, resolved: list[ResolvedSpec], samples: SampleSet,
               warnings: tuple[str, ...] | list[str] = ()) -> Work[tuple[nn.Module, CompressionResult]]:
    """Compress a deep copy of ``model``; returns (candidate, result). Memory: the original and one
    copy (weights are compressed in place in the copy, layer by layer)."""
    total = len(resolved) + 2
    yield Progress("compress", 0, total, "copying the model")
    candidate, channels = pruned_copy(model, graph, resolved, samples.batches[0])
    structural = [r for r in resolved if r.params.structural]
    done: list[LayerCompression] = []
    act_layers: list[tuple[str, str, str, float]] = []
    notes = list(warnings)
    ties = _ties(candidate)
    compressed: dict[tuple[str, int], LayerCompression] = {}  # weight storage -> the spec that compressed it
    step = len(structural)
    for r in resolved:
        if r.params.structural:
            continue
        step += 1
        yield Progress("compress", step, total, r.layer_id)
        layer = graph[r.layer_id]
        module = candidate.get_submodule(layer.module_path or "")
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise PlanError(f"spec {r.spec_index}: layer {r.layer_id!r} has no weight tensor to compress.")
        key = _storage(weight)
        if key in compressed:  # a tied weight (GPT-2's lm_head is wte): one storage, compressed once
            first = compressed[key]
            notes.append(f"layer {r.layer_id!r} shares its weight with {first.layer_id!r} (tied); it was compressed "
                            f"once, by spec {first.spec_index}, and both layers use it")
            done.append(LayerCompression(r.layer_id, r.spec_index, first.weight))
            continue
        try:
            w_hat, rep = _compress_weight(r.params, weight.data, f"{layer.module_path}.weight")
        except ValueError as exc:
            raise PlanError(f"spec {r.spec_index}: layer {r.layer_id!r}: {exc}.") from exc
        with torch.no_grad():
            weight.copy_(w_hat)
        done.append(compressed.setdefault(key, LayerCompression(r.layer_id, r.spec_index, rep)))
        p = r.params
        if isinstance(p, QuantizeParams) and p.activations and layer.op_kind != "embedding":  # an embedding's input is token ids
            act_layers.append((r.layer_id, layer.module_path or "", str(p.act_calibration), p.act_percentile))
    acts: list[ActivationQuant] = []
    if act_layers:
        yield Progress("compress", total - 1, total, f"calibrating {len(act_layers)} activation range(s) on {samples.n_samples} samples")
        try:
            acts = calibrate_activations(candidate, act_layers, samples.batches)
        except ValueError as exc:
            raise PlanError(f"activation calibration: {exc}.") from exc
    release_memory()  # the per-layer temporaries of the techniques are gone: give their heap pages back
    yield Progress("compress", total, total, "comparing outputs")
    chosen = {graph[c.layer_id].module_path for c in done}
    for key, c in compressed.items():
        others = [n for n in ties.get(key, ()) if n != c.weight.name and n.rsplit(".", 1)[0] not in chosen]
        if others:
            notes.append(f"{c.weight.name} is tied to {', '.join(others)} (one storage): compressing layer {c.layer_id!r} "
                            f"changes {'it' if len(others) == 1 else 'them'} too")
    before = model_bytes(model)
    per_weight = [c.weight for c in compressed.values()]  # per storage: a tied weight is stored, and compressed, once
    after = model_bytes(candidate) - sum(w.numel * w.bits_before // 8 for w in per_weight) + sum(w.bytes_after for w in per_weight)
    output = compare_outputs(model, candidate, samples)
    simulated = bool(done or acts)  # zeros and fake-quant run on dense float kernels
    return candidate, CompressionResult(tuple(done), tuple(channels), tuple(acts), before, int(after), output,
                                        tuple(notes), simulated)
