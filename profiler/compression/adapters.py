"""Export a resolved plan as the configs real toolchains take. Each adapter lists, in
``cannot_express``, every part of the plan it had to leave out, so nothing is dropped silently.

* ONNX Runtime ``quantize_static`` / ``quantize_dynamic`` arguments (node names come from the
  ONNX node -> layer map, so a plan written over module paths lands on the right ONNX nodes).
* coremltools.optimize.torch configs (``PostTrainingQuantizerConfig``, ``PostTrainingPalettizerConfig``,
  ``MagnitudePrunerConfig``) as their ``from_dict`` form, keyed by module name = LayerScope layer id.
* torch.ao ``QConfigMapping`` (``set_module_name`` per layer): a JSON description, and
  ``build_qconfig_mapping`` for the real object.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..graph import LayerGraph
from .plan import COMPRESSIBLE_KINDS, ResolvedSpec, compressible_weights
from .specs import Calibration, Granularity, PalettizeParams, PruneChannelsParams, PruneParams, QuantizeParams, TechniqueParams

__all__ = ["OrtQuantConfig", "ort_quant_config", "coreml_configs", "torchao_mapping", "build_qconfig_mapping", "QUANTIZABLE_ONNX_OPS"]

QUANTIZABLE_ONNX_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Gather")
_DYNAMIC_OPS = ("Conv", "MatMul", "Gather")


def _grouped(lines: list[str]) -> tuple[str, ...]:
    """'a: X', 'b: X' -> '2 layers (a, b): X' so fifty palettized layers make one line, not fifty."""
    groups: dict[str, list[str]] = {}
    for line in lines:
        head, sep, rest = line.partition(": ")
        key, name = (rest, head) if sep and " " not in head else (line, "")
        groups.setdefault(key, []).append(name)
    out = []
    for rest, named in groups.items():
        who = [w for w in named if w]
        if not who:
            out.append(rest)
        elif len(who) == 1:
            out.append(f"{who[0]}: {rest}")
        else:
            shown = ", ".join(who[:6]) + (f", … ({len(who) - 6} more)" if len(who) > 6 else "")
            out.append(f"{len(who)} layers ({shown}): {rest}")
    return tuple(out)


def _describe(r: ResolvedSpec) -> str:
    return f"{r.layer_id}: {r.describe()}"


def _int8(p: TechniqueParams) -> QuantizeParams | None:
    """The spec's quantize params when they are plain int8 (per tensor or per channel), else None."""
    return p if isinstance(p, QuantizeParams) and p.bits == 8 and p.granularity is not Granularity.GROUP else None


# --------------------------------------------------------------------------- ONNX Runtime
@dataclass(frozen=True)
class OrtQuantConfig:
    mode: str  # "static" (QDQ, calibrated activations) or "dynamic" (activations quantised at run time)
    nodes_to_quantize: tuple[str, ...]
    per_channel: bool
    weight_type: str  # onnxruntime.quantization.QuantType member name
    activation_type: str
    calibrate_method: str  # CalibrationMethod member name (static only)
    extra_options: dict[str, Any]
    layer_nodes: dict[str, list[str]]  # layer id -> the ONNX nodes that carry it
    cannot_express: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps({"tool": "onnxruntime.quantization", "function": f"quantize_{self.mode}", **asdict(self)}, indent=2)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``quantize_static`` / ``quantize_dynamic`` (with ORT's enums)."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

        kw: dict[str, Any] = {"nodes_to_quantize": list(self.nodes_to_quantize), "per_channel": self.per_channel,
                              "weight_type": QuantType[self.weight_type], "extra_options": dict(self.extra_options)}
        if self.mode == "static":
            kw |= {"quant_format": QuantFormat.QDQ, "activation_type": QuantType[self.activation_type],
                   "calibrate_method": CalibrationMethod[self.calibrate_method]}
        return kw


def ort_quant_config(resolved: Sequence[ResolvedSpec], graph: LayerGraph, node_layers: dict[str, tuple[str, str]]) -> OrtQuantConfig:
    """``node_layers``: ONNX node name -> (op type, layer id) for the nodes LayerScope mapped."""
    cannot: list[str] = []
    int8: dict[str, QuantizeParams] = {}
    for r in resolved:
        q = _int8(r.params)
        if q is not None:
            int8[r.layer_id] = q
        elif r.technique == "prune_channels":
            cannot.append(f"{_describe(r)} — a structural change: LayerScope applies it in torch before the ONNX export")
        else:
            cannot.append(f"{_describe(r)} — these arguments quantise to 8 bits only (no int2–7, group-wise, "
                          f"palettization, sparsity or float16)")
    layer_nodes: dict[str, list[str]] = {}
    for node, (op, lid) in node_layers.items():
        if lid in int8 and op in QUANTIZABLE_ONNX_OPS:
            layer_nodes.setdefault(lid, []).append(node)
    for lid in int8:
        if lid not in layer_nodes:
            cannot.append(f"{lid}: no ONNX {'/'.join(QUANTIZABLE_ONNX_OPS)} node maps to this layer")
    specs = [int8[lid] for lid in layer_nodes]
    with_acts = [q for q in specs if q.activations]
    mode = "static" if with_acts else "dynamic"
    if mode == "dynamic":  # quantize_dynamic has integer kernels for these ops only (no Gemm)
        for lid in list(layer_nodes):
            ops = {n: node_layers[n][0] for n in layer_nodes[lid]}
            keep = [n for n, op in ops.items() if op in _DYNAMIC_OPS]
            if len(keep) < len(ops):
                cannot.append(f"{lid}: ONNX {', '.join(sorted(set(ops.values()) - set(_DYNAMIC_OPS)))} has no ORT dynamic "
                              f"int8 kernel; quantise this layer's activations too (static) to quantise it")
            if keep:
                layer_nodes[lid] = keep
            else:
                del layer_nodes[lid]
        specs = [int8[lid] for lid in layer_nodes]
    if with_acts and len(with_acts) != len(specs):
        cannot.append("some int8 layers quantise activations and some do not; ORT applies one mode to all "
                      f"nodes, so all {len(specs)} are quantised statically")
    grans = {q.granularity for q in specs}
    if len(grans) > 1:
        cannot.append("per-channel and per-tensor layers are mixed; ORT's per_channel is one flag, set to per-channel for all")
    syms = {q.symmetric for q in specs}
    if len(syms) > 1:
        cannot.append("symmetric and asymmetric layers are mixed; ORT's WeightSymmetric is one flag, set to symmetric for all")
    cals = {q.act_calibration for q in with_acts}
    calib = "MinMax"
    extra: dict[str, Any] = {"WeightSymmetric": all(syms) if syms else True, "ActivationSymmetric": False}
    if "mse" in cals:
        cannot.append("act_calibration=mse has no ORT calibrator; MinMax is used (ORT also offers Entropy)")
    if cals == {"percentile"}:
        calib = "Percentile"
        extra["CalibPercentile"] = with_acts[0].act_percentile
    elif "percentile" in cals:
        cannot.append("percentile and other calibrations are mixed; ORT calibrates all nodes one way (MinMax)")
    nodes = tuple(n for lid in layer_nodes for n in layer_nodes[lid])
    return OrtQuantConfig(mode, nodes, Granularity.PER_CHANNEL in grans, "QInt8" if all(syms) else "QUInt8", "QInt8", calib, extra,
                          layer_nodes, _grouped(cannot))


# --------------------------------------------------------------------------- coremltools
def _module_layers(resolved: Sequence[ResolvedSpec], graph: LayerGraph | None, tool: str) -> tuple[list[ResolvedSpec], list[str]]:
    """The specs on conv/linear/embedding modules (what module-name configs reach), and a line for each
    other one: attention projections and weights passed to functions are compressed by LayerScope, but
    ``tool`` configures torch.nn layers by module name. ``graph`` None: every layer is taken as such a module."""
    if graph is None:
        return list(resolved), []
    kept, cannot = [], []
    for r in resolved:
        layer = graph[r.layer_id]
        if layer.module_path is not None and layer.op_kind in COMPRESSIBLE_KINDS:
            kept.append(r)
        else:
            names = ", ".join(t.name for t in compressible_weights(layer))
            cannot.append(f"{r.layer_id} ({layer.type_name}, {names}) — {tool} configures conv, linear and embedding "
                          f"modules by name; LayerScope compressed this weight in its own evaluation only")
    return kept, cannot


def coreml_configs(resolved: Sequence[ResolvedSpec], graph: LayerGraph | None = None) -> dict[str, Any]:
    """coremltools.optimize.torch configs in their ``from_dict`` form, one per technique family."""
    quant, palette, prune = {}, {}, {}
    resolved, cannot = _module_layers(resolved, graph, "coremltools")
    for r in resolved:
        p = r.params
        if isinstance(p, QuantizeParams) and p.bits in (4, 8):
            gran = {Granularity.PER_TENSOR: "per_tensor", Granularity.PER_CHANNEL: "per_channel",
                    Granularity.GROUP: "per_block"}[p.granularity]
            cfg: dict[str, Any] = {"weight_dtype": f"int{p.bits}" if p.symmetric else f"uint{p.bits}",
                   "granularity": gran, "quantization_scheme": "symmetric" if p.symmetric else "affine"}
            if p.granularity is Granularity.GROUP:
                cfg["block_size"] = p.group_size
            quant[r.layer_id] = cfg
            if p.activations:
                cannot.append(f"{r.layer_id}: activation quantisation — post-training quantisation in coremltools is "
                              f"weight-only; use coremltools.optimize.torch.quantization.LinearQuantizer (QAT) or "
                              f"coremltools.optimize.coreml.linear_quantize_activations")
        elif isinstance(p, PalettizeParams):
            pcfg: dict[str, Any] = {"n_bits": p.bits, "granularity": "per_tensor"}
            if p.channels_per_lut:
                pcfg |= {"granularity": "per_grouped_channel", "group_size": p.channels_per_lut}
            palette[r.layer_id] = pcfg
        elif isinstance(p, PruneParams):
            prune[r.layer_id] = {"target_sparsity": p.sparsity, "granularity": "per_scalar"}
        elif isinstance(p, PruneChannelsParams):
            prune[r.layer_id] = {"target_sparsity": p.amount, "granularity": "per_channel"}
            cannot.append(f"{r.layer_id}: prune_channels — Core ML's per_channel pruning zeros whole channels "
                          f"(training-time MagnitudePruner) but does not remove them or repair the next layer")
        else:
            cannot.append(f"{_describe(r)} — coremltools has 4/8-bit linear quantisation; float16 is the whole-model "
                          f"compute_precision option of ct.convert, not a per-layer config")
    out: dict[str, Any] = {"tool": "coremltools.optimize.torch", "module_names_are": "torch module paths (LayerScope layer ids)"}
    if quant:
        out["PostTrainingQuantizerConfig"] = {"module_name_configs": quant}
    if palette:
        out["PostTrainingPalettizerConfig"] = {"module_name_configs": palette}
    if prune:
        out["MagnitudePrunerConfig"] = {"module_name_configs": prune}
    out["cannot_express"] = list(_grouped(cannot))
    return out


# --------------------------------------------------------------------------- torch.ao
def _ao_entry(r: ResolvedSpec, kind: str) -> dict[str, str] | None:
    q = _int8(r.params)
    if q is None:
        return None
    if kind == "embedding":
        return {"qconfig": "float_qparams_weight_only_qconfig"}
    weight = "default_per_channel_weight_observer" if q.granularity is Granularity.PER_CHANNEL else "default_weight_observer"
    if q.activations:
        act = {Calibration.MINMAX: "MinMaxObserver", Calibration.PERCENTILE: "HistogramObserver",
               Calibration.MSE: "HistogramObserver"}[q.act_calibration]
        return {"activation": f"{act}(dtype=quint8, reduce_range=False)", "weight": weight, "mode": "static"}
    return {"activation": "PlaceholderObserver(dtype=quint8, is_dynamic=True)",
            "weight": weight, "mode": "dynamic (weights int8, activations quantised at run time)"}


def torchao_mapping(resolved: Sequence[ResolvedSpec], graph: LayerGraph) -> dict[str, Any]:
    """JSON description of the QConfigMapping ``build_qconfig_mapping`` builds."""
    names = {}
    resolved, cannot = _module_layers(resolved, graph, "torch.ao's QConfigMapping")
    for r in resolved:
        entry = _ao_entry(r, graph[r.layer_id].op_kind)
        if entry is None:
            cannot.append(f"{_describe(r)} — torch.ao's QConfig has int8 kernels only (no int2–7 or group-wise "
                          f"weights, palettization, sparsity or float16 casts)")
        else:
            q = r.params
            if isinstance(q, QuantizeParams) and q.activations and q.act_calibration is not Calibration.MINMAX:
                cannot.append(f"{r.layer_id}: act_calibration={q.act_calibration} — torch.ao's HistogramObserver "
                              f"minimises L2 error over its histogram; it has no percentile setting")
            names[r.layer_id] = entry
    return {"tool": "torch.ao.quantization.QConfigMapping", "global": None, "module_name": names, "cannot_express": list(_grouped(cannot))}


def build_qconfig_mapping(resolved: Sequence[ResolvedSpec], graph: LayerGraph):
    """The real ``torch.ao.quantization.QConfigMapping`` (global None: only the plan's layers)."""
    import torch
    from torch.ao.quantization import (
        HistogramObserver,
        MinMaxObserver,
        PlaceholderObserver,
        QConfig,
        QConfigMapping,
        default_per_channel_weight_observer,
        default_weight_observer,
        float_qparams_weight_only_qconfig,
    )

    mapping = QConfigMapping()
    for r in _module_layers(resolved, graph, "torch.ao")[0]:
        entry = _ao_entry(r, graph[r.layer_id].op_kind)
        if entry is None:
            continue
        if "qconfig" in entry:
            mapping.set_module_name(r.layer_id, float_qparams_weight_only_qconfig)
            continue
        weight = default_per_channel_weight_observer if "per_channel" in entry["weight"] else default_weight_observer
        if entry["mode"] == "static":
            obs = MinMaxObserver if entry["activation"].startswith("MinMax") else HistogramObserver
            act = obs.with_args(dtype=torch.quint8, reduce_range=False)
        else:
            act = PlaceholderObserver.with_args(dtype=torch.quint8, is_dynamic=True)
        mapping.set_module_name(r.layer_id, QConfig(activation=act, weight=weight))
    return mapping
