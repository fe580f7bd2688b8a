"""Real int8 speed: export the float model to ONNX, quantise it with ONNX Runtime's own quantizer
using the plan's ORT adapter arguments, and time float vs int8 sessions, interleaved, on this CPU.
This is also the proof that the ORT adapter's output is accepted by ORT."""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import OnnxMappingError
from ..errorstats import sqnr_db
from ..files.data import SampleSet
from ..graph import LayerGraph
from ..paired import time_interleaved
from ..progress import Progress, Work
from ..resources import release_memory
from ..runtimes.onnx import calibration_reader, export_onnx, load_onnx, quiet_root_logger, source_map
from .adapters import OrtQuantConfig, ort_quant_config
from .plan import ResolvedSpec, compressible_weights

__all__ = ["OrtInt8Result", "onnx_node_layers", "quantize_with_ort"]


@dataclass(frozen=True)
class OrtInt8Result:
    config: OrtQuantConfig
    float_onnx: str
    int8_onnx: str
    quantized_nodes: int  # nodes ORT really quantised (QDQ pairs / integer ops found in the output)
    float_ms: float  # median ORT run, this machine
    int8_ms: float
    runs: int
    batch_size: int  # the sessions are timed on the first sample batch
    float_file_bytes: int
    int8_file_bytes: int
    output_sqnr_db: float  # int8 ORT output vs float ORT output, over the samples
    accuracy_float: float | None
    accuracy_int8: float | None

    @property
    def speedup(self) -> float:
        return self.float_ms / self.int8_ms if self.int8_ms else float("nan")


def onnx_node_layers(onnx_model, graph: LayerGraph) -> dict[str, tuple[str, str]]:
    """ONNX node name -> (op type, the compressible layer it computes)."""
    out = {}
    for name, src in source_map(onnx_model, graph).items():
        lids = [lid for lid in src.layer_ids if lid in graph and compressible_weights(graph[lid])]
        if lids:
            out[name] = (src.op_type, lids[0])
    return out


@contextlib.contextmanager
def _tempdir(folder: Path):
    old = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = old


def quantize_with_ort(model: torch.nn.Module, graph: LayerGraph, resolved: Sequence[ResolvedSpec], samples: SampleSet,
                      workdir: Path, runs: int = 30) -> Work[OrtInt8Result | str]:
    """The measurement, or why there is none: a sentence naming what ORT's quantizer could not take."""
    import onnxruntime as ort

    workdir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = workdir / "float.onnx", workdir / "int8.onnx"
    yield Progress("ort int8", 0, 4, "exporting the float model to ONNX")
    # Weights stream to <file>.data and stay there: the node graph is read without them, ORT's
    # quantizer and sessions read the files. Peak memory: ORT's own copies, never a Python one too.
    export_onnx(model, samples.batches[0], fp32, external_data=True)
    onnx_model = load_onnx(fp32)
    cfg = ort_quant_config(resolved, graph, onnx_node_layers(onnx_model, graph))
    if not cfg.nodes_to_quantize:
        why = "; ".join(cfg.cannot_express[:2]) or "no ONNX node maps to the plan's layers"
        return f"ONNX Runtime int8 was not measured: none of the plan's layers became a node ORT's quantizer takes ({why})"
    yield Progress("ort int8", 1, 4, f"ORT quantize_{cfg.mode} on {len(cfg.nodes_to_quantize)} node(s)")
    names = [i.name for i in onnx_model.graph.input]
    _quantize(cfg, fp32, int8, names, samples, workdir)
    release_memory()  # ORT's quantizer freed a few model-sized copies
    q = load_onnx(int8)
    done = sum(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") for n in q.graph.node)
    done = len({n.name for n in q.graph.node if n.op_type in ("ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul")}) or done
    yield Progress("ort int8", 2, 4, "timing float vs int8 sessions")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sessions = [ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in (fp32, int8)]
    feeds = [dict(zip(names, [t.numpy() for t in b], strict=True)) for b in samples.batches]
    float_ms, int8_ms = _time_sessions(sessions, feeds[0], runs)
    yield Progress("ort int8", 3, 4, "comparing outputs")
    sqnr, acc = _compare_sessions(sessions, feeds, samples)
    yield Progress("ort int8", 4, 4, "done")
    return OrtInt8Result(cfg, str(fp32), str(int8), done, float_ms, int8_ms, runs,
                         int(samples.batches[0][0].shape[0]) if samples.batches[0][0].dim() else 1,
                         _onnx_bytes(fp32), _onnx_bytes(int8), sqnr, acc[0], acc[1])


def _quantize(cfg: OrtQuantConfig, fp32: Path, int8: Path, names: list[str], samples: SampleSet, workdir: Path) -> None:
    """ORT's own quantize_static (calibrated on ``samples``) or quantize_dynamic, float -> int8 file."""
    from onnxruntime.quantization import quantize_dynamic, quantize_static

    try:
        # ORT prints calibration chatter; its own temporary models go into our work folder, so a kill
        # leaves nothing outside it (the next start sweeps it)
        with contextlib.redirect_stdout(io.StringIO()), quiet_root_logger(), _tempdir(workdir):
            if cfg.mode == "static":
                reader = calibration_reader(names, samples)
                quantize_static(str(fp32), str(int8), reader, use_external_data_format=True, **cfg.kwargs())
            else:
                quantize_dynamic(str(fp32), str(int8), use_external_data_format=True, **cfg.kwargs())
    except Exception as exc:
        raise OnnxMappingError(f"ONNX Runtime's quantize_{cfg.mode} failed on {fp32}: {type(exc).__name__}: {exc}") from exc


def _time_sessions(sessions: list[Any], feed: dict[str, Any], runs: int) -> tuple[float, float]:
    """Median ms of the float and int8 sessions, after 3 warm-up runs each, interleaved run by run (``paired``)."""
    paired = time_interleaved(lambda: sessions[0].run(None, feed), lambda: sessions[1].run(None, feed), runs, warmup=3)
    return paired.a_ms, paired.b_ms


def _compare_sessions(sessions: list[Any], feeds: list[dict[str, Any]], samples: SampleSet) -> tuple[float, list[float | None]]:
    """The int8 session's output SQNR against the float session's over every sample, and both top-1s when labelled."""
    outs = [[s.run(None, f)[0] for f in feeds] for s in sessions]
    ref = torch.from_numpy(np.concatenate([o.reshape(-1) for o in outs[0]]))
    cand = torch.from_numpy(np.concatenate([o.reshape(-1) for o in outs[1]]))
    acc: list[float | None] = [None, None]
    if samples.labels is not None:
        y = torch.cat(list(samples.labels))
        for k in range(2):
            pred = torch.from_numpy(np.concatenate([o.reshape(o.shape[0], -1).argmax(1) for o in outs[k]]))
            acc[k] = float((pred == y).double().mean())
    return sqnr_db(ref, cand), acc


def _onnx_bytes(path: Path) -> int:
    """An ONNX model's size on disk, its external data files included."""
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.name == path.name or p.name.startswith(f"{path.name}."))
