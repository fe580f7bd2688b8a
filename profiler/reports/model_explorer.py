"""Per-node overlays for Google AI Edge Model Explorer (``pip install ai-edge-model-explorer``).

Model Explorer reads node data as one JSON file per metric: ``{graph_id: {"name", "results": {node_id:
{"value"}}, "gradient" | "thresholds"}}`` (its ``node_data_builder.ModelNodeData``). The files must be keyed
by the node ids of the graph Model Explorer itself builds from the model file:

* PyTorch: its adapter loads a ``.pt2`` and names the one graph ``graph``, each node by the
  ExportedProgram's fx node name (no decompositions). LayerScope writes that program (``model.pt2``) and
  places each layer's numbers on the export nodes that make up the layer (the export capture's grouping);
  a profile taken with torch.fx is matched to those layers by layer id, then by module and op kind in order.
* ONNX (the ``model-explorer-onnx`` adapter): the graph id is the ONNX graph's name, node ids are ONNX node
  names. ORT's compiled ops are placed on the original nodes they absorbed.

A layer made of several nodes carries its value on one of them (its first compute node), so the sums
Model Explorer shows for a module group stay the layer sums."""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn

from ..capture import capture_exported, quiet_torch_logs
from ..errors import LayerScopeError, describe
from ..files.safeio import OutputFolder, atomic_path, atomic_write_text
from ..files.source import SameModel
from ..graph import LayerGraph
from ..profile import Profile
from ..resources import untouched
from ..roofline import Bound
from ..runtimes.onnx.results import OnnxProfile

__all__ = ["ModelExplorerFiles", "layer_nodes", "profile_node_data", "onnx_node_data", "write_model_explorer",
           "write_onnx_model_explorer", "PYTORCH_GRAPH_ID", "TESTED_WITH"]

PYTORCH_GRAPH_ID = "graph"  # what Model Explorer's PyTorch adapter names the ExportedProgram's graph
TESTED_WITH = "ai-edge-model-explorer 0.1.34, model-explorer-onnx 0.4.2"
_HEAT = [{"stop": 0, "bgColor": "#ffffff"}, {"stop": 0.5, "bgColor": "#fdae61"}, {"stop": 1, "bgColor": "#d7191c"}]
_MEMORY, _COMPUTE = "#9ecae1", "#fc9272"  # the roofline view's blue and red


@dataclass(frozen=True)
class ModelExplorerFiles:
    model: Path  # the file to open in Model Explorer (the node ids below are its own)
    node_data: tuple[Path, ...]
    placed: int  # layers (or ORT ops) whose numbers landed on a node
    total: int
    unplaced: tuple[str, ...]  # and those that did not

    def command(self) -> str:
        return f"model-explorer {self.model} --node_data_paths={','.join(str(p) for p in self.node_data)}"


def _anchor(nodes: Sequence[str]) -> str | None:
    """The node that carries a layer's value: its first one that is not a tuple ``getitem``."""
    for n in nodes:
        if not n.startswith("getitem"):
            return n
    return nodes[0] if nodes else None


def layer_nodes(profiled: LayerGraph, exported: LayerGraph) -> dict[str, str]:
    """Profile layer id -> the export node that carries it. ``exported`` is the export capture of the program
    Model Explorer opens; layers match by id, and the rest (functional calls named differently by fx and
    export: ``add`` vs ``add_``) by enclosing module and op kind, in execution order."""
    out: dict[str, str] = {}
    rest_p: dict[tuple[str, str], list[str]] = {}
    rest_e: dict[tuple[str, str], list[str]] = {}
    for layer in profiled:
        if layer.id in exported and (node := _anchor(exported[layer.id].fx_nodes)):
            out[layer.id] = node
        else:
            rest_p.setdefault((layer.parents[-1] if layer.parents else "", layer.op_kind), []).append(layer.id)
    for layer in exported:
        if layer.id not in profiled:
            rest_e.setdefault((layer.parents[-1] if layer.parents else "", layer.op_kind), []).append(layer.id)
    for key, ids in rest_p.items():
        others = rest_e.get(key, [])
        if len(others) == len(ids):  # the same number of such calls in the same module: pair them in order
            for lid, eid in zip(ids, others, strict=True):
                if node := _anchor(exported[eid].fx_nodes):
                    out[lid] = node
    return out


def _file(graph_id: str, name: str, results: Mapping[str, float], style: dict[str, Any]) -> dict[str, Any]:
    return {graph_id: {"name": name, "results": {k: {"value": v} for k, v in results.items()}, **style}}


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def profile_node_data(profile: Profile, nodes: dict[str, str], sqnr_db: dict[str, float] | None = None,
                      threshold_db: float = 20.0, graph_id: str = PYTORCH_GRAPH_ID) -> dict[str, dict[str, Any]]:
    """File stem -> node data, one metric each: measured latency and its share (absent in a static profile),
    FLOPs, memory/compute bound (0/1, coloured as the roofline), % of the roof, and with ``sqnr_db`` (a
    compression's per-layer output SQNR) that too, red under ``threshold_db``."""
    rows = [r for r in profile.rows() if r.layer.id in nodes]
    out: dict[str, dict[str, Any]] = {}
    if not profile.static:
        timed = [r for r in rows if r.timing is not None]
        out["latency_ms"] = _file(graph_id, "LayerScope latency (ms, median)",
                                  {nodes[r.layer.id]: r.timing.latency_ms for r in timed if r.timing}, {"gradient": _HEAT})
        out["latency_share_pct"] = _file(graph_id, "LayerScope share of time (%)",
                                         {nodes[r.layer.id]: 100 * r.latency_share for r in timed}, {"gradient": _HEAT})
    out["flops"] = _file(graph_id, "LayerScope FLOPs", {nodes[r.layer.id]: r.metrics.flops for r in rows if r.metrics.flops},
                         {"gradient": _HEAT})
    bound = {nodes[r.layer.id]: int(r.bound is Bound.COMPUTE) for r in rows if r.bound in (Bound.MEMORY, Bound.COMPUTE)}
    out["bound"] = _file(graph_id, f"LayerScope bound on {profile.hardware.name} (0 memory, 1 compute)", bound,
                         {"thresholds": [{"value": 0, "bgColor": _MEMORY}, {"value": 1, "bgColor": _COMPUTE}]})
    roof = {nodes[r.layer.id]: 100 * f for r in rows if r.point and (f := r.point.roof_fraction) is not None and math.isfinite(f)}
    if roof:
        out["roof_pct"] = _file(graph_id, "LayerScope % of the roofline", roof,
                                {"gradient": [{"stop": 0, "bgColor": "#d7191c"}, {"stop": 1, "bgColor": "#1a9641"}]})
    if sqnr_db is not None:
        sq = {nodes[lid]: v for lid, v in sqnr_db.items() if lid in nodes and _finite(v)}
        out["sqnr_db"] = _file(graph_id, f"LayerScope output SQNR after compression (dB; red under {threshold_db:g})", sq,
                               {"thresholds": [{"value": threshold_db, "bgColor": "#f4a582"}, {"value": 40, "bgColor": "#fee08b"},
                                               {"value": 1e9, "bgColor": "#a6d96a"}]})
    return out


def _write_files(folder: Path, files: dict[str, dict[str, Any]]) -> tuple[Path, ...]:
    return tuple(atomic_write_text(folder / f"{stem}.json", json.dumps(data, indent=1), "--model-explorer")
                 for stem, data in files.items())


_PLAIN_CONTAINERS = (tuple, list, dict, collections.OrderedDict, type(None))


def _plain(spec: pytree.TreeSpec) -> bool:
    """Whether a pytree of outputs holds only containers any process can load back (not a Hugging Face
    ``ModelOutput``, which a .pt2 can name but only a process that imported transformers can rebuild)."""
    return spec.is_leaf() or (spec.type in _PLAIN_CONTAINERS and all(_plain(c) for c in spec.children_specs))


class _FlatOutputs(SameModel):
    """``model`` returning its output tensors as one flat tuple; the exported nodes and module paths are the
    model's own (a ``SameModel``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.training = model.training

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = type(self.wrapped).forward(self.wrapped, *inputs)
        return tuple(t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor))


def _export(module: nn.Module, inputs: Sequence[torch.Tensor]) -> torch.export.ExportedProgram:
    """torch.export of ``module`` that Model Explorer (a process without the model's libraries) can load."""
    try:
        with torch.inference_mode(False), quiet_torch_logs(), untouched(module):
            ep = torch.export.export(module, tuple(inputs), strict=False)
            if not _plain(ep.call_spec.out_spec):
                ep = torch.export.export(_FlatOutputs(module), tuple(inputs), strict=False)
    except Exception as exc:
        raise LayerScopeError(f"--model-explorer: Model Explorer opens PyTorch models as a torch.export program, and "
                              f"torch.export failed on this model: {describe(exc)}") from exc
    return ep


def write_model_explorer(folder: str | Path, profile: Profile, module: torch.nn.Module | None, inputs: Sequence[torch.Tensor],
                         exported: torch.export.ExportedProgram | None = None, source_pt2: str | Path | None = None,
                         sqnr_db: dict[str, float] | None = None, threshold_db: float = 20.0, force: bool = False) -> ModelExplorerFiles:
    """Write ``model.pt2`` (torch.export of ``module``; or point at ``source_pt2`` when the model came from that
    file as ``exported``) and the node data files keyed by that program's nodes, into a folder LayerScope may
    fill (``force``: one of the user's)."""
    target = OutputFolder(folder, "--model-explorer", force)
    if exported is None:
        if module is None:
            raise LayerScopeError("--model-explorer needs the model or its ExportedProgram")
        exported = _export(module, inputs)
    exported_graph = capture_exported(exported, module, inputs).graph
    nodes = layer_nodes(profile.graph, exported_graph)
    with target as out:
        if source_pt2 is not None:
            model_path = Path(source_pt2).expanduser().resolve()
        else:
            model_path = out / "model.pt2"
            with atomic_path(model_path, "--model-explorer") as tmp:
                torch.export.save(exported, str(tmp))
        files = _write_files(out, profile_node_data(profile, nodes, sqnr_db, threshold_db))
    unplaced = tuple(lid for lid in profile.graph.ids() if lid not in nodes)
    return ModelExplorerFiles(model_path, files, len(nodes), len(profile.graph), unplaced)


def _onnx_graph_name(path: str | Path) -> str:
    import onnx

    name = onnx.load(str(path), load_external_data=False).graph.name
    return name or "<main>"  # what model-explorer-onnx calls an unnamed main graph


_COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "MultiHeadAttention", "LSTM", "GRU")


def onnx_node_data(result: OnnxProfile, graph_id: str) -> tuple[dict[str, dict[str, Any]], int]:
    """ORT kernel time per original ONNX node: a compiled op's time sits on the heaviest node it absorbed
    (its Conv/MatMul/Gemm, else its first), so a fused Conv+Relu shows on the Conv and group sums stay true.
    Returns the files and how many ops were placed."""
    op_type = {n.node: n.op_type for n in result.nodes}
    ms: dict[str, float] = {}
    for op in result.ops:
        if not op.onnx_nodes:
            continue
        anchor = next((n for n in op.onnx_nodes if op_type.get(n, "") in _COMPUTE_OPS), op.onnx_nodes[0])
        ms[anchor] = ms.get(anchor, 0.0) + op.latency_ms
    total = result.total_op_ms or 1.0
    files = {"ort_ms": _file(graph_id, f"ONNX Runtime kernel time (ms, median; {result.provider}, opt {result.opt_level.value})",
                             ms, {"gradient": _HEAT}),
             "ort_share_pct": _file(graph_id, "ONNX Runtime share of kernel time (%)", {k: 100 * v / total for k, v in ms.items()},
                                    {"gradient": _HEAT})}
    return files, sum(1 for op in result.ops if op.onnx_nodes)


def write_onnx_model_explorer(folder: str | Path, result: OnnxProfile, onnx_path: str | Path, force: bool = False) -> ModelExplorerFiles:
    """Node data for the ONNX graph at ``onnx_path`` (the exported model is copied in as ``model.onnx``; a
    user's .onnx file is pointed at, so its external data stays beside it), into a folder LayerScope may fill."""
    with OutputFolder(folder, "--model-explorer", force) as out:
        src = Path(onnx_path)
        if result.has_source:  # LayerScope exported it into a work folder that may be removed: copy it, weights included
            import onnx

            model_path = out / "model.onnx"
            exported = onnx.load(str(src))  # the exporter keeps weights in an external file beside it: read them in
            with atomic_path(model_path, "--model-explorer") as tmp:
                onnx.save_model(exported, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                                location="model.onnx.data")
        else:
            model_path = src.expanduser().resolve()
        files, placed = onnx_node_data(result, _onnx_graph_name(model_path))
        written = _write_files(out, files)
    unplaced = tuple(op.name for op in result.ops if not op.onnx_nodes)
    return ModelExplorerFiles(model_path, written, placed, len(result.ops), unplaced)
