"""A resolved plan as OpenVINO NNCF calls on a PyTorch model: ``nncf.quantize`` for int8 layers with int8
activations, ``nncf.compress_weights`` for weight-only int8/int4 layers, each with an ``IgnoredScope`` that
keeps every other weighted layer in float.

Names are those of NNCF's torch graph (nncf 3.x traces with function hooks): a call of module
``layer1.0.conv1`` is the node ``layer1/0/conv1/conv2d/0`` (module path with ``/``, the torch function,
the call index). The scope uses one anchored pattern per module, ``^layer1/0/conv1/[^/]+/\\d+$``, so it
holds for every call of a shared module and whatever function it calls; NNCF validates each pattern
against the graph and refuses one that matches nothing. A model converted to OpenVINO IR first has other
node names (``__module.layer1.0.conv1/aten::_convolution/Convolution``): this export is for the torch backend.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import PlanError
from ..graph import LayerGraph
from .adapters import _describe, _grouped, _module_layers
from .plan import COMPRESSIBLE_KINDS, ResolvedSpec
from .specs import Calibration, Granularity, QuantizeParams

__all__ = ["NNCF_TESTED", "nncf_config", "nncf_pattern", "build_nncf_ignored_scope", "apply_nncf", "nncf_weight_modes"]

NNCF_TESTED = "3.4"


def nncf_pattern(module_path: str) -> str:
    """The IgnoredScope pattern that matches every call of ``module_path`` in NNCF's torch graph."""
    return "^" + "/".join(re.escape(p) for p in module_path.split(".")) + r"/[^/]+/\d+$"


def _weighted_modules(graph: LayerGraph) -> dict[str, str]:
    """module path -> a layer id of it, for every conv/linear/embedding module (what NNCF quantises by weight)."""
    out: dict[str, str] = {}
    for layer in graph:
        if layer.module_path is not None and layer.op_kind in COMPRESSIBLE_KINDS:
            out.setdefault(layer.module_path, layer.id)
    return out


def _scope(float_paths: Iterable[str]) -> dict[str, Any]:
    patterns = [nncf_pattern(p) for p in sorted(float_paths)]
    return {"names": [], "patterns": patterns, "types": [], "validate": True}


def _weight_mode(p: QuantizeParams) -> tuple[str, int] | str:
    """(CompressWeightsMode name, group_size) for a weight-only spec, or why NNCF cannot take it."""
    if p.bits not in (4, 8):
        return f"NNCF's compress_weights has int8 and int4 integer modes (no int{p.bits})"
    if p.bits == 8 and p.granularity is Granularity.GROUP:
        return "NNCF's int8 weight compression is per output channel; group-wise int8 would be coarser than the plan"
    sym = "SYM" if p.symmetric else "ASYM"
    group = p.group_size if p.granularity is Granularity.GROUP else -1  # -1: per output channel
    return f"INT{p.bits}_{sym}", (group if p.bits == 4 else -1)


def nncf_config(resolved: Sequence[ResolvedSpec], graph: LayerGraph) -> dict[str, Any]:
    """The plan as NNCF steps, in JSON; ``apply_nncf`` runs them. Each step lists its layers and an
    IgnoredScope holding every other conv/linear/embedding module, so NNCF changes exactly the plan's
    layers (it still places activation quantizers by its own rules around the layers it quantises)."""
    modules = _weighted_modules(graph)
    kept, cannot = _module_layers(resolved, graph, "NNCF's IgnoredScope")
    approx: list[str] = []
    static: list[str] = []
    weight_only: dict[tuple[str, int], list[str]] = {}
    for r in kept:
        p, path = r.params, graph[r.layer_id].module_path
        assert path is not None  # _module_layers keeps module layers only
        if not isinstance(p, QuantizeParams):
            cannot.append(f"{_describe(r)} — NNCF's post-training calls quantise integers; palettization, sparsity and "
                          f"float16 casts are not NNCF post-training configs")
            continue
        if p.activations:
            static.append(path)
            if p.granularity is Granularity.PER_TENSOR:
                approx.append(f"{r.layer_id}: per_tensor weights → NNCF's per-channel weight quantizer (finer than the plan)")
            if not p.symmetric:
                approx.append(f"{r.layer_id}: asymmetric weights → symmetric (NNCF's presets quantise weights symmetrically)")
            if p.act_calibration is not Calibration.MINMAX:
                approx.append(f"{r.layer_id}: act_calibration={p.act_calibration} → NNCF's own range estimator for the preset")
            continue
        mode = _weight_mode(p)
        if isinstance(mode, str):
            cannot.append(f"{_describe(r)} — {mode}")
            continue
        if p.bits == 8 and p.granularity is Granularity.PER_TENSOR:
            approx.append(f"{r.layer_id}: per_tensor → per output channel (NNCF's int8 weight compression; finer than the plan)")
        weight_only.setdefault(mode, []).append(path)
    steps: list[dict[str, Any]] = []
    if static:
        steps.append({"function": "nncf.quantize", "preset": "MIXED", "layers": sorted(static),
                      "ignored_scope": _scope(set(modules) - set(static)),
                      "why_preset": "MIXED: symmetric weights, asymmetric activations, as LayerScope's int8 activations"})
        approx.append("nncf.quantize places activation quantizers by its own rules (inputs of the quantised layers, and for "
                      "transformers the attention matmuls); the ignored scope pins which weighted layers stay float")
    for (mode, group), paths in sorted(weight_only.items()):
        step: dict[str, Any] = {"function": "nncf.compress_weights", "mode": mode, "layers": sorted(paths),
                                "ignored_scope": _scope(set(modules) - set(paths))}
        if mode.startswith("INT4"):  # ratio 1 on exactly these layers: no int8 backup, embeddings and the last layer included
            step |= {"group_size": group, "ratio": 1.0, "all_layers": True, "backup_mode": "NONE"}
        steps.append(step)
    return {"tool": "nncf", "tested_with": f"nncf {NNCF_TESTED} (torch backend)",
            "node_names_are": "NNCF torch graph names: module path with '/', the function, the call index (layer1/0/conv1/conv2d/0)",
            "apply": "layerscope.profiler.compression.apply_nncf(model, this, calibration_inputs)",
            "steps": steps, "approximations": approx, "cannot_express": list(_grouped(cannot))}


def build_nncf_ignored_scope(scope: dict[str, Any]):
    """The real ``nncf.IgnoredScope`` of one step's ``ignored_scope`` (nncf must be installed)."""
    nncf = _import_nncf()
    return nncf.IgnoredScope(names=list(scope.get("names", [])), patterns=list(scope.get("patterns", [])),
                             types=list(scope.get("types", [])), validate=bool(scope.get("validate", True)))


def _import_nncf():
    try:
        import nncf
    except ImportError as exc:
        raise PlanError(f"NNCF is not installed (pip install nncf); tested with nncf {NNCF_TESTED}: {exc}") from exc
    return nncf


def apply_nncf(model, data: dict[str, Any], calibration: Sequence[Any]):
    """Run an ``nncf_config`` JSON's steps on ``model`` (eval mode) and return NNCF's model.
    ``calibration``: the inputs NNCF calibrates and traces with (one item per ``model(*item)`` call)."""
    nncf = _import_nncf()
    from nncf import CompressWeightsMode
    from nncf.parameters import BackupMode

    items = [tuple(x) if isinstance(x, (tuple, list)) else x for x in calibration]
    if not items:
        raise PlanError("apply_nncf: NNCF needs at least one calibration input to trace the model.")
    dataset = nncf.Dataset(items)
    for step in data.get("steps", []):
        scope = build_nncf_ignored_scope(step["ignored_scope"])
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


def nncf_weight_modes(model) -> dict[str, str]:
    """module path -> what NNCF did to its weight, read from the hooks NNCF added: ``int8 (quantize)`` for a
    weight fake-quantizer, ``int4_sym`` / ``int8_asym`` / … for a weight decompressor."""
    out: dict[str, str] = {}
    for name, mod in model.named_modules():
        kind = type(mod).__name__
        parts = name.split(".")
        if len(parts) != 4 or parts[0] != "__nncf_hooks":
            continue
        key = parts[2]
        if parts[1] == "pre_hooks" and kind.endswith("Quantizer"):
            node, _, port = key.rpartition("__")
            path = ".".join(node.split("/")[:-2])
            if port != "0" and _has_matrix_weight(model, path):  # the weight comes in on port 1; other ports of other
                out[path] = "int8 (quantize)"                     # ops (attention's key, a norm's scale) are not weights
        elif parts[1] == "post_hooks" and kind.endswith("WeightsDecompressor") and key.endswith(":weight__0"):
            m = re.match(r"INT(\d)(Asymmetric|Symmetric)", kind)
            out[key[: -len(":weight__0")].replace(":", ".")] = (f"int{m[1]}_{'asym' if m[2] == 'Asymmetric' else 'sym'}"
                                                                if m else kind)
    return out


def _has_matrix_weight(model, path: str) -> bool:
    try:
        weight = getattr(model.get_submodule(path), "weight", None)
    except AttributeError:
        return False
    return weight is not None and weight.dim() >= 2
