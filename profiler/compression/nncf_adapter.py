"""A resolved plan as OpenVINO NNCF calls on a PyTorch model: ``nncf.quantize`` for int8 layers with int8
activations, ``nncf.compress_weights`` for weight-only int8/int4 layers, each with an ``IgnoredScope`` that
keeps every other weighted layer in float.

The plan is written over parameter names (``layer1.0.conv1.weight``, GPT-2's ``transformer.h.0.attn.c_attn.weight``),
and the ``IgnoredScope`` names are read from NNCF's own torch graph of the model: the ops that consume each
weight. They cannot be derived from module paths: NNCF 3.4 names a call ``layer1/0/conv1/conv2d/0`` in a plain
module tree, but drops the block index of a Hugging Face layer (``transformer/attn/c_attn/addmm/1`` is block 1's
``c_attn``), because those layers override ``__call__``. So ``--export-nncf`` writes the names when NNCF is
installed, and ``apply_nncf`` resolves them on the model when the file has none. A model converted to OpenVINO
IR first has other node names again: this export is for NNCF's torch backend.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..errors import PlanError
from ..graph import LayerGraph
from .adapters import _describe, _grouped
from .plan import ResolvedSpec, compressible_weights
from .specs import Calibration, Granularity, QuantizeParams

__all__ = ["NNCF_TESTED", "nncf_config", "nncf_weight_nodes", "build_nncf_ignored_scope", "apply_nncf", "nncf_weight_modes"]

NNCF_TESTED = "3.4"
# NNCF node types that take a weight; a weight reaches one through at most a few view/split ops
_WEIGHTED_OPS = frozenset({"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
                           "addmm", "baddbmm", "matmul", "bmm", "mm", "einsum", "embedding", "embedding_bag"})

WeightNodes = dict[str, list[tuple[str, int]]]  # parameter name -> (NNCF op node, the input port the weight comes in on)


def _weight_mode(p: QuantizeParams) -> tuple[str, int] | str:
    """(CompressWeightsMode name, group_size) for a weight-only spec, or why NNCF cannot take it."""
    if p.bits not in (4, 8):
        return f"NNCF's compress_weights has int8 and int4 integer modes (no int{p.bits})"
    if p.bits == 8 and p.granularity is Granularity.GROUP:
        return "NNCF's int8 weight compression is per output channel; group-wise int8 would be coarser than the plan"
    sym = "SYM" if p.symmetric else "ASYM"
    group = p.group_size if p.granularity is Granularity.GROUP else -1  # -1: per output channel
    return f"INT{p.bits}_{sym}", (group if p.bits == 4 else -1)


def _scope(float_weights: set[str], weight_nodes: WeightNodes | None) -> dict[str, Any] | None:
    if weight_nodes is None:
        return None
    names = sorted({node for w in float_weights for node, _ in weight_nodes.get(w, [])})
    return {"names": names, "patterns": [], "types": [], "validate": True}


def nncf_config(resolved: Sequence[ResolvedSpec], graph: LayerGraph, weight_nodes: WeightNodes | None = None) -> dict[str, Any]:
    """The plan as NNCF steps, in JSON; ``apply_nncf`` runs them. Each step lists its layers, the weights it
    compresses and the weights every other layer keeps float; with ``weight_nodes`` (``nncf_weight_nodes`` of the
    model) its ``ignored_scope`` names NNCF's ops for those float weights, else ``apply_nncf`` resolves them."""
    weighted = {t.name for layer in graph for t in compressible_weights(layer)}
    approx: list[str] = []
    cannot: list[str] = []
    groups: dict[tuple[str, int] | None, tuple[list[str], list[str]]] = {}  # None: nncf.quantize; else (mode, group size)
    for r in resolved:
        p, names = r.params, [t.name for t in compressible_weights(graph[r.layer_id])]
        if not names:
            cannot.append(f"{_describe(r)} — no weight matrix: NNCF compresses weights")
            continue
        if not isinstance(p, QuantizeParams):
            cannot.append(f"{_describe(r)} — NNCF's post-training calls quantise integers; palettization, sparsity and "
                          f"float16 casts are not NNCF post-training configs")
            continue
        if weight_nodes is not None and (missing := [n for n in names if n not in weight_nodes]):
            cannot.append(f"{_describe(r)} — NNCF's graph has no op that reads {', '.join(missing)}")
            continue
        key: tuple[str, int] | None = None
        if p.activations:
            if p.granularity is Granularity.PER_TENSOR:
                approx.append(f"{r.layer_id}: per_tensor weights → NNCF's per-channel weight quantizer (finer than the plan)")
            if not p.symmetric:
                approx.append(f"{r.layer_id}: asymmetric weights → symmetric (NNCF's presets quantise weights symmetrically)")
            if p.act_calibration is not Calibration.MINMAX:
                approx.append(f"{r.layer_id}: act_calibration={p.act_calibration} → NNCF's own range estimator for the preset")
        else:
            mode = _weight_mode(p)
            if isinstance(mode, str):
                cannot.append(f"{_describe(r)} — {mode}")
                continue
            if p.bits == 8 and p.granularity is Granularity.PER_TENSOR:
                approx.append(f"{r.layer_id}: per_tensor → per output channel (NNCF's int8 weight compression; finer than the plan)")
            key = mode
        ids, weights = groups.setdefault(key, ([], []))
        ids.append(r.layer_id)
        weights.extend(names)
    steps: list[dict[str, Any]] = []
    for key, (ids, weights) in sorted(groups.items(), key=lambda kv: (kv[0] is not None, kv[0] or ("", 0))):
        keep = weighted - set(weights)
        step: dict[str, Any] = {"layers": ids, "weights": sorted(weights), "keep_float": sorted(keep),
                                "ignored_scope": _scope(keep, weight_nodes)}
        if key is None:
            step = {"function": "nncf.quantize", "preset": "MIXED", **step,
                    "why_preset": "MIXED: symmetric weights, asymmetric activations, as LayerScope's int8 activations"}
            approx.append("nncf.quantize places activation quantizers by its own rules (inputs of the quantised layers, and for "
                          "transformers the attention matmuls); the ignored scope pins which weighted layers stay float")
        else:
            step = {"function": "nncf.compress_weights", "mode": key[0], **step}
            if key[0].startswith("INT4"):  # ratio 1 on exactly these layers: no int8 backup, embeddings and the last layer included
                step |= {"group_size": key[1], "ratio": 1.0, "all_layers": True, "backup_mode": "NONE"}
        steps.append(step)
    names_from = ("NNCF's torch graph of this model: the ops that read each float weight" if weight_nodes is not None else
                  "not in this file (written without the model in NNCF's hands): apply_nncf reads them from NNCF's graph of "
                  "the model")
    return {"tool": "nncf", "tested_with": f"nncf {NNCF_TESTED} (torch backend)", "ignored_scope_names": names_from,
            "apply": "layerscope.profiler.compression.apply_nncf(model, this, calibration_inputs)",
            "steps": steps, "approximations": approx, "cannot_express": list(_grouped(cannot))}


def _import_nncf():
    try:
        import nncf
    except ImportError as exc:
        raise PlanError(f"NNCF is not installed (pip install nncf); tested with nncf {NNCF_TESTED}: {exc}") from exc
    return nncf


def nncf_weight_nodes(model, example_inputs: Sequence[Any]) -> WeightNodes:
    """Parameter name -> the NNCF op nodes that read it (and on which input port), from NNCF's own trace of
    ``model`` on ``example_inputs``. The model is traced, not changed."""
    _import_nncf()
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

    graph = build_nncf_graph(model, tuple(example_inputs))
    out: WeightNodes = {}
    for node in graph.get_all_nodes():
        if node.node_type != "nncf_model_const":
            continue
        frontier, seen = [(node, None)], set()
        for _ in range(4):  # through views, splits and transposes of the weight to the op that uses it
            nxt = []
            for n, _port in frontier:
                for edge in graph.get_output_edges(n):
                    to = edge.to_node
                    if to.node_type in _WEIGHTED_OPS:
                        if to.node_name not in seen:
                            seen.add(to.node_name)
                            out.setdefault(node.node_name, []).append((to.node_name, edge.input_port_id))
                    else:
                        nxt.append((to, edge.input_port_id))
            frontier = nxt
    by_tensor: dict[int, list[str]] = {}  # a tied weight (GPT-2's lm_head.weight is wte.weight) has NNCF's first name only
    for name, param in model.named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(param), []).append(name)
    for names in by_tensor.values():
        known = next((out[n] for n in names if n in out), None)
        for n in names:
            if known is not None:
                out.setdefault(n, known)
    return out


def build_nncf_ignored_scope(scope: dict[str, Any]):
    """The real ``nncf.IgnoredScope`` of one step's ``ignored_scope`` (nncf must be installed)."""
    nncf = _import_nncf()
    return nncf.IgnoredScope(names=list(scope.get("names", [])), patterns=list(scope.get("patterns", [])),
                             types=list(scope.get("types", [])), validate=bool(scope.get("validate", True)))


def apply_nncf(model, data: dict[str, Any], calibration: Sequence[Any]):
    """Run an ``nncf_config`` JSON's steps on ``model`` (eval mode) and return NNCF's model.
    ``calibration``: the inputs NNCF calibrates and traces with (one tuple per ``model(*item)`` call). A step
    without ``ignored_scope`` names has them read from NNCF's graph of the model first."""
    nncf = _import_nncf()
    from nncf import CompressWeightsMode
    from nncf.parameters import BackupMode

    items = [tuple(x) if isinstance(x, (tuple, list)) else x for x in calibration]
    if not items:
        raise PlanError("apply_nncf: NNCF needs at least one calibration input to trace the model.")
    dataset = nncf.Dataset(items)
    weight_nodes: WeightNodes | None = None
    for step in data.get("steps", []):
        scope_data = step.get("ignored_scope")
        if scope_data is None:
            if weight_nodes is None:
                first = items[0] if isinstance(items[0], tuple) else (items[0],)
                weight_nodes = nncf_weight_nodes(model, first)
            scope_data = _scope(set(step["keep_float"]), weight_nodes)
        scope = build_nncf_ignored_scope(scope_data)
        if step["function"] == "nncf.quantize":
            model = nncf.quantize(model, dataset, preset=nncf.QuantizationPreset[step["preset"]], subset_size=len(items),
                                  ignored_scope=scope)
        elif step["function"] == "nncf.compress_weights":
            kw: dict[str, Any] = {}
            if "group_size" in step:
                kw = {"group_size": step["group_size"], "ratio": step["ratio"], "all_layers": step["all_layers"],
                      "backup_mode": BackupMode[step["backup_mode"]]}
            model = nncf.compress_weights(model, mode=CompressWeightsMode[step["mode"]], dataset=dataset, ignored_scope=scope, **kw)
        else:
            raise PlanError(f"NNCF step {step['function']!r}: unknown function.")
    return model


def nncf_weight_modes(model, weight_nodes: WeightNodes) -> dict[str, str]:
    """Parameter name -> what NNCF did to it, read from the hooks it added: ``int8 (quantize)`` for a weight
    fake-quantizer on the port the weight comes in on, ``int4_sym`` / ``int8_asym`` / … for a weight decompressor.
    ``weight_nodes``: ``nncf_weight_nodes`` of the float model."""
    at = {(node, port): name for name, uses in weight_nodes.items() for node, port in uses}
    out: dict[str, str] = {}
    for name, mod in model.named_modules():
        kind = type(mod).__name__
        parts = name.split(".")
        if len(parts) != 4 or parts[0] != "__nncf_hooks":
            continue
        node, _, port = parts[2].rpartition("__")
        if parts[1] == "pre_hooks" and kind.endswith("Quantizer") and (node, int(port)) in at:
            out[at[node, int(port)]] = "int8 (quantize)"
        elif parts[1] == "post_hooks" and kind.endswith("WeightsDecompressor") and port == "0":
            m = re.match(r"INT(\d)(Asymmetric|Symmetric)", kind)
            out[node.replace(":", ".")] = f"int{m[1]}_{'asym' if m[2] == 'Asymmetric' else 'sym'}" if m else kind
    return out
