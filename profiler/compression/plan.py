"""CompressionPlan: an ordered list of per-layer specs (selector -> technique + parameters).

JSON, schema version 1::

    {"version": 1, "model": "resnet18",            # optional: refuses a plan for another model
     "specs": [{"select": "type:Conv2d", "technique": "quantize", "params": {"bits": 8}},
               {"select": "memory-bound", "technique": "palettize", "params": {"bits": 4}},
               {"select": "fc", "technique": "cast", "params": {"dtype": "float16"}}]}

Selectors: an exact layer id; ``glob:layer1.*``; ``re:^layer[12]\\.``; ``type:Linear`` (module
class); ``memory-bound`` / ``compute-bound``; ``top:10`` (the 10 slowest compressible layers by
measured latency); ``all``. A selector picks only layers with a weight to compress
(``compressible_weights``: conv, linear and embedding modules, ``nn.MultiheadAttention``'s projections,
and a parameter matrix passed to a linear-like function, e.g. transformers' ``Conv1D`` in GPT-2);
naming any other layer exactly is an error.

Techniques: ``quantize`` (weights int2–8, optional int8 activations), ``cast`` (float16/bfloat16),
``palettize`` (k-means LUT), ``prune`` (unstructured magnitude), ``prune_channels`` (structured,
really removes channels). A layer keeps one weight technique (a later spec replaces an earlier one)
plus, separately, ``prune_channels``, which is applied first. Validation names the spec, the field
and the layer, and nothing is applied unless the whole plan is valid.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import re2

from ..errors import PlanError
from ..files.safeio import parse_json, read_json
from ..graph import Layer, TensorMeta, TensorRole
from ..profile import Profile
from ..roofline import Bound
from .specs import CALIBRATIONS, STRUCTURAL, TECHNIQUES, Technique, TechniqueParams, parse_params

__all__ = ["PLAN_VERSION", "LayerSpec", "CompressionPlan", "ResolvedSpec", "resolve_plan", "COMPRESSIBLE_KINDS", "compressible_weights",
           "TECHNIQUES", "STRUCTURAL", "CALIBRATIONS", "select_layers", "ESTIMATES", "estimate_plan"]

PLAN_VERSION = 1
MAX_PLAN_BYTES = 16 * 2**20
# Selector regexes run on RE2 (linear time in the id length, whatever the pattern): a plan from
# somewhere else cannot hang LayerScope with catastrophic backtracking such as ``re:^(.|.|.)*!$``.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
COMPRESSIBLE_KINDS = frozenset({"conv", "conv_transpose", "linear", "embedding"})  # module kinds with one `weight`
# functional calls whose parameter matrices are weights (transformers' Conv1D is addmm(bias, x, weight))
_FUNCTIONAL_WEIGHT_KINDS = frozenset({"linear", "addmm", "matmul", "einsum", "conv", "conv_transpose", "embedding"})
STRUCTURAL_KINDS = COMPRESSIBLE_KINDS  # prune_channels removes channels of these modules (Torch-Pruning)


def compressible_weights(layer: Layer) -> tuple[TensorMeta, ...]:
    """The weights a weight technique (quantize, cast, palettize, prune) compresses in ``layer``, by
    parameter name: a conv/linear/embedding module's ``weight``; a MultiheadAttention's projection
    matrices (``in_proj_weight`` or ``q/k/v_proj_weight``, ``out_proj.weight``); an LSTM/GRU/RNN's
    input and recurrent matrices (``weight_ih_l0``, ``weight_hh_l0_reverse``, …); the parameter
    matrices a functional linear-like call reads. Empty: nothing to compress (biases and norm scales
    are never compressed)."""
    params = [t for t in layer.operands if t.role is TensorRole.PARAMETER]
    if layer.module_path is not None:
        if layer.op_kind in COMPRESSIBLE_KINDS:
            return tuple(t for t in params if t.name == f"{layer.module_path}.weight")
        if layer.op_kind in ("multihead_attention", "lstm", "gru", "rnn"):  # in_proj_weight, out_proj.weight, weight_ih_l0, …
            return tuple(t for t in params if "weight" in t.name.rsplit(".", 1)[-1] and len(t.shape) >= 2)
        return ()
    if layer.op_kind in _FUNCTIONAL_WEIGHT_KINDS:
        return tuple(t for t in params if len(t.shape) >= 2)
    return ()
@dataclass(frozen=True)
class LayerSpec:
    select: str
    technique: str
    params: dict[str, Any] = field(default_factory=dict)  # as written in the plan; validated by resolve_plan


@dataclass(frozen=True)
class CompressionPlan:
    specs: tuple[LayerSpec, ...]
    version: int = PLAN_VERSION
    model: str | None = None

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "model": self.model,
                           "specs": [{"select": s.select, "technique": s.technique, "params": s.params} for s in self.specs]}, indent=2)

    @classmethod
    def load(cls, path: str | Path) -> CompressionPlan:
        p = Path(path).expanduser()
        return cls.from_data(read_json(p, "plan", PlanError, max_bytes=MAX_PLAN_BYTES), f"plan {p}")

    @classmethod
    def from_json(cls, text: str | bytes, origin: str = "plan") -> CompressionPlan:
        return cls.from_data(parse_json(text, origin, PlanError, max_bytes=MAX_PLAN_BYTES), origin)

    @classmethod
    def from_data(cls, data: object, origin: str = "plan") -> CompressionPlan:
        if not isinstance(data, dict):
            raise PlanError(f"{origin}: the top level must be an object with 'version' and 'specs'.")
        if data.get("version") != PLAN_VERSION:
            raise PlanError(f"{origin}: field 'version' is {data.get('version')!r}; this LayerScope reads version {PLAN_VERSION}.")
        raw = data.get("specs")
        if not isinstance(raw, list) or not raw:
            raise PlanError(f"{origin}: field 'specs' must be a non-empty list.")
        specs = []
        for i, s in enumerate(raw):
            if not isinstance(s, dict):
                raise PlanError(f"{origin}: spec {i} must be an object with 'select', 'technique' and 'params'.")
            for key in ("select", "technique"):
                if not isinstance(s.get(key), str) or not s[key]:
                    raise PlanError(f"{origin}: spec {i}: field '{key}' is missing or not a string.")
            params = s.get("params", {})
            if not isinstance(params, dict):
                raise PlanError(f"{origin}: spec {i}: field 'params' must be an object.")
            unknown = set(s) - {"select", "technique", "params"}
            if unknown:
                raise PlanError(f"{origin}: spec {i}: unknown field(s) {', '.join(sorted(unknown))}.")
            try:
                parse_params(s["technique"], params)
            except ValueError as exc:
                raise PlanError(f"{origin}: spec {i}: {exc}.") from exc
            specs.append(LayerSpec(s["select"], s["technique"], params))
        model = data.get("model")
        if model is not None and not isinstance(model, str):
            raise PlanError(f"{origin}: field 'model' must be a string.")
        return cls(tuple(specs), PLAN_VERSION, model)


@dataclass(frozen=True)
class ResolvedSpec:
    """One layer's technique with its typed parameters (a plain mapping is validated into them)."""
    layer_id: str
    spec_index: int
    technique: Technique | str  # given as a string, stored as the Technique
    params: TechniqueParams

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", parse_params(self.technique, self.params))
        object.__setattr__(self, "technique", self.params.technique)

    def describe(self) -> str:
        return f"{self.technique}({self.params.describe()})"


def _select(selector: str, profile: Profile) -> list[str]:
    g = profile.graph
    if selector.startswith("glob:"):
        return [i for i in g.ids() if fnmatch.fnmatchcase(i, selector[5:])]
    if selector.startswith("re:"):
        try:
            rx = re2.compile(selector[3:], _RE2_OPTIONS)
        except re2.error as exc:
            why = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
            raise ValueError(f"bad regular expression (RE2 syntax: no backreferences or look-arounds): {why}") from exc
        return [i for i in g.ids() if rx.search(i)]
    if selector.startswith("type:"):
        want = selector[5:]
        return [layer.id for layer in g if layer.type_name == want]
    if selector in ("memory-bound", "compute-bound"):
        bound = Bound.MEMORY if selector == "memory-bound" else Bound.COMPUTE
        return [lid for lid in g.ids() if profile.roofline[lid].bound is bound]
    if selector.startswith("top:"):
        try:
            n = int(selector[4:])
        except ValueError as exc:
            raise ValueError("top:N needs an integer N") from exc
        if n < 1:
            raise ValueError(f"top:N needs N >= 1, got {n}")
        return [r.layer.id for r in profile.ranked() if r.layer.id in g and compressible_weights(g[r.layer.id])][:n]
    if selector == "all":
        return [layer.id for layer in g if compressible_weights(layer)]
    return [selector] if selector in g else []


def select_layers(selector: str, profile: Profile) -> list[str]:
    """Compressible layers a selector picks (for 'select memory-bound' / 'top-k' in the app)."""
    index = profile.graph._index  # one dict lookup per layer: "Memory-bound" on 10,000 layers is a click
    return [lid for lid in _select(selector, profile) if compressible_weights(index[lid])]


def resolve_plan(plan: CompressionPlan, profile: Profile) -> tuple[list[ResolvedSpec], list[str]]:
    """Layers each spec applies to (later specs win) and warnings; raises PlanError on any problem."""
    if plan.model and plan.model != profile.model.name:
        raise PlanError(f"This plan is for model {plan.model!r}, not {profile.model.name!r}.")
    chosen: dict[tuple[str, bool], ResolvedSpec] = {}
    g = profile.graph
    for i, spec in enumerate(plan.specs):
        where = f"spec {i} (select {spec.select!r})"
        try:
            params = parse_params(spec.technique, spec.params)
        except ValueError as exc:
            raise PlanError(f"{where}: {exc}.") from exc
        try:
            ids = _select(spec.select, profile)
        except ValueError as exc:
            raise PlanError(f"{where}: {exc}.") from exc
        if not ids:
            raise PlanError(f"{where}: matches no layer. Use a layer id, glob:…, re:…, type:…, memory-bound, compute-bound or top:N.")
        structural = params.structural
        if structural:
            usable = [lid for lid in ids if g[lid].op_kind in STRUCTURAL_KINDS and g[lid].module_path]
        else:
            usable = [lid for lid in ids if compressible_weights(g[lid])]
        what = ("only conv and linear modules lose channels" if structural else
                "only conv, linear, embedding and attention weights, and weight matrices passed to linear-like functions, "
                "can be compressed")
        if not usable:
            bad = g[ids[0]]
            raise PlanError(f"{where}: technique {spec.technique!r} does not apply to layer {bad.id!r} ({bad.type_name}): {what}.")
        if spec.select in g and spec.select not in usable:
            raise PlanError(f"{where}: technique {spec.technique!r} does not apply to layer {spec.select!r} "
                            f"({g[spec.select].type_name}): {what}.")
        if structural:
            outputs = [lid for lid in usable if lid in g.output_layers]
            if outputs and spec.select == outputs[0]:
                raise PlanError(f"{where}: prune_channels would change the shape of the model's output ({outputs[0]!r}); "
                                f"prune its input channels by pruning the layer before it instead.")
            usable = [lid for lid in usable if lid not in g.output_layers]
            if not usable:
                raise PlanError(f"{where}: prune_channels matches only the model's output layer(s) ({', '.join(outputs[:3])}), whose "
                                f"channels are the output's shape; select the layers before them.")
        for lid in usable:
            chosen[(lid, structural)] = ResolvedSpec(lid, i, spec.technique, params)
    warnings = [
        f"{r.layer_id}: this is the model's output layer. If the output is fine-grained (a regression or continuous head), "
        f"quantising it can show up as artifacts; 'if the output is fine grain, don't quantize' (paper 5.6.4)."
        for r in chosen.values() if r.layer_id in g.output_layers and r.technique in ("quantize", "palettize")
    ]
    order = {lid: k for k, lid in enumerate(g.ids())}
    return sorted(chosen.values(), key=lambda r: (not r.params.structural, order[r.layer_id])), warnings


# One-word plans for a quick estimate (paper Strategy #5): every conv/linear/embedding layer.
ESTIMATES: dict[str, tuple[LayerSpec, ...]] = {
    "int8": (LayerSpec("all", "quantize", {"bits": 8, "granularity": "per_channel", "activations": True}),),
    "int8-weights": (LayerSpec("all", "quantize", {"bits": 8, "granularity": "per_channel"}),),
    "int4": (LayerSpec("all", "quantize", {"bits": 4, "granularity": "per_channel"}),),
    "fp16": (LayerSpec("all", "cast", {"dtype": "float16"}),),
    "palettize4": (LayerSpec("all", "palettize", {"bits": 4}),),
}


def estimate_plan(kind: str, model: str | None = None) -> CompressionPlan:
    return CompressionPlan(ESTIMATES[kind], model=model)
