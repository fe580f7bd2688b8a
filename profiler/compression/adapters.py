"""Export a resolved plan as the configs real toolchains take. Each adapter lists, in
``cannot_express``, every part of the plan it had to leave out, so nothing is dropped silently.

* ONNX Runtime ``quantize_static`` / ``quantize_dynamic`` arguments (node names come from the
  ONNX node -> layer map, so a plan written over module paths lands on the right ONNX nodes).
* coremltools.optimize.torch configs (``PostTrainingQuantizerConfig``, ``PostTrainingPalettizerConfig``,
  ``MagnitudePrunerConfig``) as their ``from_dict`` form, keyed by module name = LayerScope layer id.
* torchao ``FqnToConfig`` (module path -> ``IntxWeightOnlyConfig`` / ``Int8DynamicActivationIntxWeightConfig``):
  a JSON description, ``build_torchao_config`` for the real object and ``apply_torchao`` to run ``quantize_``.
* torch.ao ``QConfigMapping`` (``set_module_name`` per layer; torch.ao.quantization is deprecated): a JSON
  description, and ``build_qconfig_mapping`` for the real object.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..errors import PlanError
from ..graph import LayerGraph
from .plan import COMPRESSIBLE_KINDS, ResolvedSpec, compressible_weights
from .specs import Calibration, Granularity, PalettizeParams, PruneChannelsParams, PruneParams, QuantizeParams, TechniqueParams

__all__ = ["OrtQuantConfig", "ort_quant_config", "coreml_configs", "torchao_config", "build_torchao_config", "apply_torchao",
           "torch_ao_mapping", "build_qconfig_mapping", "QUANTIZABLE_ONNX_OPS"]

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


def torch_ao_mapping(resolved: Sequence[ResolvedSpec], graph: LayerGraph) -> dict[str, Any]:
    """JSON description of the QConfigMapping ``build_qconfig_mapping`` builds. torch.ao.quantization is
    deprecated in favour of torchao: see ``torchao_config``."""
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
    return {"tool": "torch.ao.quantization.QConfigMapping", "deprecated": "torch.ao.quantization is deprecated in favour of torchao "
            "(--export-torchao)", "global": None, "module_name": names, "cannot_express": list(_grouped(cannot))}


# --------------------------------------------------------------------------- torchao
TORCHAO_TESTED = "0.18"


def torchao_config(resolved: Sequence[ResolvedSpec], graph: LayerGraph) -> dict[str, Any]:
    """The plan as a torchao ``FqnToConfig`` (module path -> config), in JSON; ``build_torchao_config``
    turns it into the real object and ``apply_torchao`` runs ``quantize_`` with it.

    Quantised weights map to ``IntxWeightOnlyConfig`` (int2–int8, per output channel = ``PerAxis(0)``
    or ``PerGroup``), which runs on CPU for linear, conv and embedding layers alike; int8 activations on
    a linear layer map to ``Int8DynamicActivationIntxWeightConfig``. torchao's default ``filter_fn``
    quantises ``nn.Linear`` only, so conv and embedding layers would be skipped silently: the config is
    applied with ``filter_fn=None``, where the FQN map alone decides, and each conv is listed by name."""
    fqn: dict[str, dict[str, Any]] = {}
    approx: list[str] = []
    kept, cannot = _module_layers(resolved, graph, "torchao's FqnToConfig")
    for r in kept:
        p = r.params
        kind = graph[r.layer_id].op_kind
        if not isinstance(p, QuantizeParams):
            cannot.append(f"{_describe(r)} — torchao's CPU configs quantise integers (int2–int8); palettization, sparsity and "
                          f"float16 casts have no torchao post-training config here")
            continue
        shape = compressible_weights(graph[r.layer_id])[0].shape
        why_not = _torchao_cannot(kind, shape, p)
        if why_not:
            cannot.append(f"{r.layer_id} ({graph[r.layer_id].type_name}, weight {list(shape)}): {why_not}")
            continue
        gran: dict[str, Any] = {"PerGroup": p.group_size} if p.granularity is Granularity.GROUP else {"PerAxis": 0}
        if p.granularity is Granularity.PER_TENSOR:
            approx.append(f"{r.layer_id}: per_tensor → PerAxis(0) (torchao's intx configs take per-channel or per-group scales; "
                          f"finer than the plan, never coarser)")
        entry: dict[str, Any] = {"config": "IntxWeightOnlyConfig", "weight_dtype": f"int{p.bits}", "granularity": gran,
                                 "mapping_type": "SYMMETRIC" if p.symmetric else "ASYMMETRIC"}
        if p.activations and kind == "linear":
            entry = {"config": "Int8DynamicActivationIntxWeightConfig", "weight_dtype": f"int{p.bits}", "weight_granularity": gran,
                     "weight_mapping_type": entry["mapping_type"]}
            approx.append(f"{r.layer_id}: int8 activations → torchao's dynamic per-token int8 (computed at run time), not "
                          f"LayerScope's calibrated static range")
        elif p.activations:
            cannot.append(f"{r.layer_id} ({graph[r.layer_id].type_name}): int8 activations — torchao's dynamic-activation config "
                          f"takes 2-D (linear) weights only; the weights are quantised, activations stay float")
        fqn[r.layer_id] = entry
    convs = sorted(lid for lid in fqn if graph[lid].op_kind in ("conv", "conv_transpose", "embedding"))
    return {"tool": "torchao", "tested_with": f"torchao {TORCHAO_TESTED}",
            "apply": "quantize_(model, FqnToConfig(...), filter_fn=None)  # layerscope.profiler.compression.apply_torchao(model, this)",
            "fqn_to_config": fqn,
            "not_linear": convs and [f"{', '.join(convs)}: conv/embedding layers, which torchao's default filter_fn (nn.Linear only) "
                                     f"would skip; filter_fn=None applies them by name"] or [],
            "approximations": approx, "cannot_express": list(_grouped(cannot))}


def _torchao_cannot(kind: str, shape: tuple[int, ...], p: QuantizeParams) -> str:
    """Why torchao (tested version) cannot take this layer's quantisation, or "" when it can. Found by
    running torchao on these shapes: its intx conv path breaks on one input channel per group, and it
    groups a conv's weights along input channels, not along each output channel's flattened weights."""
    if kind in ("conv", "conv_transpose") and len(shape) > 2 and shape[1] == 1:
        return (f"torchao {TORCHAO_TESTED} fails on a conv with one input channel per group (depthwise or a 1-channel input "
                f"layer: a scale-shape error in quant_primitives); it stays float in torchao")
    if p.granularity is Granularity.GROUP:
        if kind in ("conv", "conv_transpose"):
            return ("group-wise scales — torchao groups a conv's weights along input channels, LayerScope along each output "
                    "channel's flattened weights: not the same grouping; use per_channel for torchao")
        if shape[-1] % p.group_size:
            return f"group_size {p.group_size} does not divide the {shape[-1]} input features (torchao's PerGroup needs that)"
    return ""


def build_torchao_config(data: dict[str, Any]):
    """The real ``torchao.quantization.FqnToConfig`` of a ``torchao_config`` JSON (torchao must be installed)."""
    import torch

    try:
        from torchao.quantization import FqnToConfig, Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerAxis, PerGroup
        from torchao.quantization.quant_primitives import MappingType
    except ImportError as exc:
        raise PlanError(f"torchao is not installed (pip install 'layerscope[torchao]'); tested with torchao {TORCHAO_TESTED}: {exc}") from exc

    def granularity(g: dict[str, Any]):
        return PerGroup(int(g["PerGroup"])) if "PerGroup" in g else PerAxis(int(g.get("PerAxis", 0)))

    configs = {}
    for name, e in data.get("fqn_to_config", {}).items():
        dtype = getattr(torch, e["weight_dtype"])
        if e["config"] == "IntxWeightOnlyConfig":
            configs[name] = IntxWeightOnlyConfig(weight_dtype=dtype, granularity=granularity(e["granularity"]),
                                                 mapping_type=MappingType[e["mapping_type"]])
        elif e["config"] == "Int8DynamicActivationIntxWeightConfig":
            configs[name] = Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=granularity(e["weight_granularity"]),
                                                                  weight_mapping_type=MappingType[e["weight_mapping_type"]])
        else:
            raise PlanError(f"torchao config for {name!r}: unknown config {e['config']!r}.")
    return FqnToConfig(configs)


def apply_torchao(model, data: dict[str, Any]) -> list[str]:
    """Quantise ``model`` in place with torchao from a ``torchao_config`` JSON; returns the module paths
    whose weight torchao replaced (its tensor subclasses), so a caller can check nothing was skipped."""
    from torchao.quantization import quantize_

    before = {name: type(m.weight) for name, m in model.named_modules() if isinstance(getattr(m, "weight", None), torch.Tensor)}
    quantize_(model, build_torchao_config(data), filter_fn=None)
    return [name for name, m in model.named_modules() if name in before and type(m.weight) is not before[name]]


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
