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
import torch.utils._pytree as pytree
from torch import nn

from ..capture.weights import storage_key, weight_bytes
from ..errors import InputSpecError, PlanError
from ..errorstats import PairStats
from ..files.data import SampleSet
from ..format import fmt_bytes
from ..graph import Layer, LayerGraph, TensorRole
from ..progress import Progress, Work
from ..resources import release_memory, untouched
from .activations import ActivationQuant, calibrate_activations
from .plan import COMPRESSIBLE_KINDS, ResolvedSpec, compressible_weights
from .specs import CastParams, PalettizeParams, PruneChannelsParams, PruneParams, QuantizeParams, TechniqueParams
from .structured import ChannelPruneReport, prune_channels
from .techniques import WeightReport, cast_weight, palettize_weight, prune_weight, quantize_weight

__all__ = ["LayerCompression", "Applied", "OutputChange", "apply_plan", "compress_weight", "output_leaves", "pruned_copy",
           "compare_outputs", "model_bytes"]



def compress_weight(p: TechniqueParams, w: torch.Tensor, name: str) -> tuple[torch.Tensor, WeightReport]:
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


CONSTANT_OUTPUT = 1e-3  # reference outputs that differ between samples by less than this (relative) are "constant"


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
    # the largest change of the reference output between samples, relative to its magnitude (None: one sample):
    # near 0, the output is a constant (random weights) and SQNR/cosine measure noise around it
    variation: float | None = None
    # SQNR of every output when there are several (tuple, dict, ModelOutput), by path; the numbers above are the first's
    leaves: tuple[tuple[str, float], ...] = ()

    @property
    def accuracy_points(self) -> float | None:
        """Top-1 change in percentage points (candidate - reference), when the samples are labelled."""
        if self.accuracy_reference is None or self.accuracy_candidate is None:
            return None
        return (self.accuracy_candidate - self.accuracy_reference) * 100

    @property
    def constant(self) -> bool:
        return self.variation is not None and self.variation < CONSTANT_OUTPUT



@dataclass(frozen=True)
class Applied:
    """What applying a plan to a copy of the model did: the app's Apply, every sweep candidate, and
    the first fields of a compress job's ``CompressResult`` (same names, one level)."""

    weights: tuple[LayerCompression, ...]  # weight techniques, one entry per compressed weight
    channels: tuple[ChannelPruneReport, ...]  # structural pruning
    activations: tuple[ActivationQuant, ...]  # int8 activation fake-quant
    size_bytes_before: int  # all distinct parameters and buffers, as stored
    size_bytes_after: int  # same, with compressed weights at their real storage size
    output: OutputChange
    warnings: tuple[str, ...]
    # True when weights/activations are fake-quantised: storage sizes are real, but the kernels
    # still run in float, so measured latency does not show the int8 speed-up (see the ORT check).
    simulated: bool
    # every weight matrix (a parameter of 2+ dims, once per storage) the plan left as it was, largest first
    not_compressed: tuple[UncompressedWeight, ...] = ()

    @property
    def size_ratio(self) -> float:
        return self.size_bytes_after / self.size_bytes_before if self.size_bytes_before else float("nan")

    def stored_weight_bytes(self, weight_bytes: dict[str, int]) -> dict[str, int]:
        """Per compressed layer, its parameters as stored: ``weight_bytes`` (the layer's bytes in float)
        with each compressed weight at its real size (codes, scales, LUTs) instead."""
        stored: dict[str, int] = {}
        for c in self.weights:
            so_far = stored.get(c.layer_id, weight_bytes.get(c.layer_id, 0))
            stored[c.layer_id] = so_far - c.weight.numel * c.weight.bits_before // 8 + c.weight.bytes_after
        return stored

    @property
    def unreachable(self) -> tuple[UncompressedWeight, ...]:
        """Weights left as they were because no technique reaches them (not because the plan chose so)."""
        return tuple(w for w in self.not_compressed if not w.selectable)

    def not_compressed_text(self, limit: int = 3) -> str | None:
        """One line: how much stays float, and which weights no technique reaches, by name and size."""
        if not self.not_compressed:
            return None
        total = sum(w.bytes for w in self.not_compressed)
        share = f" ({total / self.size_bytes_before:.0%} of the model)" if self.size_bytes_before else ""
        skipped = len(self.not_compressed) - len(self.unreachable)
        parts = [f"{skipped} not selected by the plan"] if skipped else []
        if self.unreachable:
            named = ", ".join(f"{w.name} {fmt_bytes(w.bytes)} ({w.reason})" for w in self.unreachable[:limit])
            more = f" and {len(self.unreachable) - limit} more" if len(self.unreachable) > limit else ""
            parts.append(f"{len(self.unreachable)} no technique reaches: {named}{more}")
        return f"{len(self.not_compressed)} weight matrices, {fmt_bytes(total)}{share}: " + "; ".join(parts)


@dataclass(frozen=True)
class UncompressedWeight:
    name: str  # parameter name (the first one, for a tied storage)
    bytes: int
    selectable: bool  # a layer a plan can select holds it; False: no technique reaches it
    reason: str  # "not selected", or why no technique reaches it (the layer and op that read it)


def _not_compressed(model: nn.Module, graph: LayerGraph, done: set[tuple[str, int]]) -> tuple[UncompressedWeight, ...]:
    reachable = {t.name for layer in graph for t in compressible_weights(layer)}
    readers: dict[str, str] = {}
    for layer in graph:
        for t in layer.operands:
            if t.role is TensorRole.PARAMETER:
                readers.setdefault(t.name, f"read by {layer.id}, a {layer.type_name}")
    names: dict[tuple[str, int], list[str]] = {}
    sizes: dict[tuple[str, int], int] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.dim() >= 2:
            key = storage_key(p)
            names.setdefault(key, []).append(name)
            sizes[key] = p.numel() * p.element_size()
    out = []
    for key, ns in names.items():
        if key in done:
            continue
        selectable = any(n in reachable for n in ns)
        reason = "not selected" if selectable else next((readers[n] for n in ns if n in readers), "read by no captured layer")
        out.append(UncompressedWeight(ns[0], sizes[key], selectable, reason))
    return tuple(sorted(out, key=lambda w: -w.bytes))


def model_bytes(model: nn.Module) -> int:
    """All distinct parameter and buffer storages, as stored (``weights.weight_bytes``)."""
    return weight_bytes(model).total


def output_leaves(out: Any) -> list[tuple[str, torch.Tensor]]:
    """Every floating tensor of a model's output (a tensor, tuple, list, dict or Hugging Face ModelOutput),
    named by its path (``last_hidden_state``, ``[1]``), in order."""
    if isinstance(out, torch.Tensor):
        leaves = [("output", out)]
    else:
        flat, _ = pytree.tree_flatten_with_path(dict(out) if isinstance(out, dict) else out)
        leaves = [(pytree.keystr(path).strip("[]'\""), v) for path, v in flat if isinstance(v, torch.Tensor)]
    floats = [(name, t.detach().float()) for name, t in leaves if t.is_floating_point()]
    if not floats:
        raise InputSpecError(f"The model's output ({type(out).__name__}) holds no floating tensor; no comparison is possible.")
    return floats


@torch.no_grad()
def compare_outputs(reference: nn.Module, candidate: nn.Module, samples: SampleSet) -> OutputChange:
    if samples.n_samples == 0:
        raise InputSpecError(f"{samples.source}: no samples to compare the outputs on.")
    err, hits_r, hits_c = PairStats(), 0, 0
    per_leaf: dict[str, PairStats] = {}  # every output, compared leaf by leaf (the first one leads: logits, last_hidden_state)
    first: torch.Tensor | None = None  # the first sample's reference output
    spread, scale = 0.0, 0.0
    for k, batch in enumerate(samples.batches):
        with untouched(reference), untouched(candidate):
            r_leaves, c_leaves = output_leaves(reference(*batch)), output_leaves(candidate(*batch))
        for (name, rl), (_, cl) in zip(r_leaves, c_leaves, strict=False):
            if rl.shape == cl.shape and bool(torch.isfinite(rl).all()):
                per_leaf.setdefault(name, PairStats()).add(rl, cl)
        r, c = r_leaves[0][1], c_leaves[0][1]
        rows = r.reshape(r.shape[0], -1) if r.dim() > 0 and r.shape[0] == batch[0].shape[0] else r.reshape(1, -1)
        first = rows[0] if first is None else first
        if rows.shape[1] == first.shape[0]:
            finite = torch.isfinite(rows).all()
            if finite:
                spread = max(spread, float((rows - first).abs().max()))
                scale = max(scale, float(rows.abs().max()))
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
    variation = (spread / scale if scale > 0 else 0.0) if n > 1 else None
    leaves = tuple((name, st.sqnr_db) for name, st in per_leaf.items()) if len(per_leaf) > 1 else ()
    return OutputChange(n, samples.source, err.sqnr_db, cos if math.isfinite(cos) else float("nan"), err.max_abs,
                        hits_r / n if labelled else None, hits_c / n if labelled else None, variation, leaves)


def pruned_copy(model: nn.Module, graph: LayerGraph, resolved: list[ResolvedSpec],
                inputs: tuple[torch.Tensor, ...]) -> tuple[nn.Module, list[ChannelPruneReport]]:
    """A deep copy of ``model`` with the plan's structural specs (channel pruning) applied, weights
    still float: the model an ONNX Runtime int8 export starts from, and the first step of
    ``apply_plan``. Without structural specs it is a plain copy."""
    candidate = copy.deepcopy(model).eval()
    targets = [(r.layer_id, graph[r.layer_id].module_path or "", r.spec_index, r.params.amount, str(r.params.norm))
               for r in resolved if isinstance(r.params, PruneChannelsParams)]
    return candidate, prune_channels(candidate, inputs, targets) if targets else []


def _ties(model: nn.Module) -> dict[tuple[str, int], list[str]]:
    """Parameter names per storage, for storages held under more than one name (tied weights)."""
    names: dict[tuple[str, int], list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(storage_key(p), []).append(name)
    return {k: v for k, v in names.items() if len(v) > 1}


def _compress_layer_weights(candidate: nn.Module, layer: Layer, r: ResolvedSpec, compressed: dict[tuple[str, int], LayerCompression],
                            notes: list[str]) -> list[LayerCompression]:
    """Compress every weight of ``layer`` in ``candidate`` in place by ``r``; a weight whose storage was already
    compressed (a tie) is not compressed again, and says so."""
    weights = compressible_weights(layer)
    if not weights:
        raise PlanError(f"spec {r.spec_index}: layer {r.layer_id!r} has no weight tensor to compress.")
    done = []
    for meta in weights:
        try:
            weight = candidate.get_parameter(meta.name)
        except AttributeError as exc:
            raise PlanError(f"spec {r.spec_index}: layer {r.layer_id!r}: the model has no parameter {meta.name!r} "
                            f"(was the profile taken of another model?).") from exc
        key = storage_key(weight)
        if key in compressed:  # a tied weight (GPT-2's lm_head is wte): one storage, compressed once
            first = compressed[key]
            notes.append(f"layer {r.layer_id!r} shares its weight with {first.layer_id!r} (tied); it was compressed "
                         f"once, by spec {first.spec_index}, and both layers use it")
            done.append(LayerCompression(r.layer_id, r.spec_index, first.weight))
            continue
        try:
            w_hat, rep = compress_weight(r.params, weight.data, meta.name)
        except ValueError as exc:
            raise PlanError(f"spec {r.spec_index}: layer {r.layer_id!r}, {meta.name}: {exc}.") from exc
        with torch.no_grad():
            weight.copy_(w_hat)
        done.append(compressed.setdefault(key, LayerCompression(r.layer_id, r.spec_index, rep)))
    return done


def _tie_notes(graph: LayerGraph, done: list[LayerCompression], compressed: dict[tuple[str, int], LayerCompression],
               ties: dict[tuple[str, int], list[str]]) -> list[str]:
    """A compressed weight tied to parameters the plan did not choose changes them too: said, per storage."""
    chosen = {t.name for c in done for t in compressible_weights(graph[c.layer_id])}
    notes = []
    for key, c in compressed.items():
        others = [n for n in ties.get(key, ()) if n not in chosen]
        if others:
            notes.append(f"{c.weight.name} is tied to {', '.join(others)} (one storage): compressing layer {c.layer_id!r} "
                         f"changes {'it' if len(others) == 1 else 'them'} too")
    return notes


def _calibration_split(samples: SampleSet, calibration: SampleSet | None, notes: list[str]) -> tuple[SampleSet, SampleSet]:
    """(what activation ranges are fitted on, what output and accuracy are measured on): ``calibration`` when given,
    else a seeded quarter of ``samples`` (``SampleSet.split_for_calibration``); said either way."""
    calib, evaluation = (calibration, samples) if calibration is not None else samples.split_for_calibration()
    if calib is evaluation:
        notes.append(f"activation ranges were fitted on the same {samples.n_samples} samples the output and accuracy are "
                     f"measured on (one batch cannot be split): give --calib-data DIR, or more --samples")
    else:
        notes.append(f"activation ranges were fitted on {calib.n_samples} samples ({calib.source}); output and accuracy "
                     f"are measured on {evaluation.n_samples} others")
    return calib, evaluation


def apply_plan(model: nn.Module, graph: LayerGraph, resolved: list[ResolvedSpec], samples: SampleSet,
               warnings: tuple[str, ...] | list[str] = (), calibration: SampleSet | None = None) -> Work[tuple[nn.Module, Applied]]:
    """Compress a deep copy of ``model``; returns (candidate, result). Activation ranges are fitted on ``calibration``
    (default: a seeded quarter of ``samples``), never on the samples output and accuracy are measured on. Memory: the
    original and one copy (weights are compressed in place in the copy, layer by layer)."""
    total = len(resolved) + 2
    yield Progress("compress", 0, total, "copying the model")
    candidate, channels = pruned_copy(model, graph, resolved, samples.batches[0])
    structural = [r for r in resolved if r.params.structural]
    done: list[LayerCompression] = []
    act_layers: list[tuple[str, str, str, float]] = []
    notes = list(warnings)
    no_act: list[str] = []  # int8 activations asked where there is no conv/linear module input to observe
    ties = _ties(candidate)
    compressed: dict[tuple[str, int], LayerCompression] = {}  # weight storage -> the spec that compressed it
    step = len(structural)
    for r in resolved:
        if r.params.structural:
            continue
        step += 1
        yield Progress("compress", step, total, r.layer_id)
        layer = graph[r.layer_id]
        done += _compress_layer_weights(candidate, layer, r, compressed, notes)
        p = r.params
        if isinstance(p, QuantizeParams) and p.activations and layer.op_kind != "embedding":  # an embedding's input is token ids
            if layer.module_path is not None and layer.op_kind in COMPRESSIBLE_KINDS:
                act_layers.append((r.layer_id, layer.module_path, str(p.act_calibration), p.act_percentile))
            else:
                no_act.append(r.layer_id)
    acts: list[ActivationQuant] = []
    if act_layers:
        calib, samples = _calibration_split(samples, calibration, notes)
        yield Progress("compress", total - 1, total, f"calibrating {len(act_layers)} activation range(s) on {calib.n_samples} samples")
        try:
            acts = calibrate_activations(candidate, act_layers, calib.batches)
        except ValueError as exc:
            raise PlanError(f"activation calibration: {exc}.") from exc
    release_memory()  # the per-layer temporaries of the techniques are gone: give their heap pages back
    yield Progress("compress", total, total, "comparing outputs")
    if no_act:
        notes.append(f"int8 activations apply to conv and linear modules (a hook fake-quantises the module's input); "
                     f"{len(no_act)} layer(s) got weights only: {', '.join(no_act[:3])}{' …' if len(no_act) > 3 else ''}")
    notes += _tie_notes(graph, done, compressed, ties)
    left = _not_compressed(candidate, graph, set(compressed))
    before = model_bytes(model)
    per_weight = [c.weight for c in compressed.values()]  # per storage: a tied weight is stored, and compressed, once
    after = model_bytes(candidate) - sum(w.numel * w.bits_before // 8 for w in per_weight) + sum(w.bytes_after for w in per_weight)
    output = compare_outputs(model, candidate, samples)
    if output.constant:
        notes.append(f"the original model's output barely changes across the {output.samples} samples (by {output.variation:.1e} of "
                     f"its magnitude): random weights, or inputs it ignores? SQNR and cosine then measure noise around a "
                     f"constant; judge with trained weights and --data with real inputs")
    simulated = bool(done or acts)  # zeros and fake-quant run on dense float kernels
    return candidate, Applied(tuple(done), tuple(channels), tuple(acts), before, int(after), output,
                                        tuple(notes), simulated, left)
