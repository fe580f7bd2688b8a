"""Cross-check: LayerScope's streaming SQNR against ONNX Runtime's own quantisation debugger
(``onnxruntime.quantization.qdq_loss_debug``) on the same tensors of a float model and its QDQ
model (as ``quantize_with_ort`` writes them). Each ONNX tensor is named by the layer that produced
it through the ONNX node -> layer map."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errorstats import PairStats
from ...files.data import SampleSet
from ...files.workspace import work_dir
from ...graph import LayerGraph
from .export import load_onnx
from .ort_util import calibration_reader, quiet_root_logger
from .sources import source_map

__all__ = ["OrtSqnrCheck", "ort_sqnr_check"]


@dataclass(frozen=True)
class OrtSqnrCheck:
    tensor: str  # ONNX tensor name in the float model
    layer_id: str | None  # the layer whose node produced it
    layerscope_db: float  # PairStats over the float and QDQ activations ORT collected
    ort_db: float  # qdq_loss_debug's xmodel_err for the same tensor


def ort_sqnr_check(float_onnx: str | Path, qdq_onnx: str | Path, samples: SampleSet, graph: LayerGraph | None = None) -> list[OrtSqnrCheck]:
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    fmodel = load_onnx(float_onnx)
    names = [i.name for i in fmodel.graph.input]
    producer = {out: n.name for n in fmodel.graph.node for out in n.output}
    layers = {k: v.layer_ids for k, v in source_map(fmodel, graph).items()} if graph is not None else {}
    with work_dir("qdqdbg") as tmp, contextlib.redirect_stdout(io.StringIO()), quiet_root_logger():
        aug_f, aug_q = tmp / "f.onnx", tmp / "q.onnx"
        modify_model_output_intermediate_tensors(str(float_onnx), str(aug_f))
        modify_model_output_intermediate_tensors(str(qdq_onnx), str(aug_q))
        f_acts = collect_activations(str(aug_f), calibration_reader(names, samples))
        q_acts = collect_activations(str(aug_q), calibration_reader(names, samples))
    matched = create_activation_matching(q_acts, f_acts)
    ort = compute_activation_error(matched)
    out = []
    for tensor, m in matched.items():
        if not m.get("float") or "xmodel_err" not in ort.get(tensor, {}):
            continue
        p = PairStats()
        for f, q in zip(m["float"], m["post_qdq"], strict=True):
            p.add(torch.from_numpy(f), torch.from_numpy(q))
        node = producer.get(tensor)
        ids = layers.get(node, ()) if node else ()
        out.append(OrtSqnrCheck(tensor, ids[-1] if ids else None, p.sqnr_db, float(ort[tensor]["xmodel_err"])))
    return out
