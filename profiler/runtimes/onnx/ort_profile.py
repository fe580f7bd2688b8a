"""Profile an ONNX Runtime session at an optimisation level and map every compiled op, fused ones too,
to its ONNX nodes, source layers and Python lines (``map_onnx``)."""

from __future__ import annotations

import collections
import dataclasses
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...capture.weights import weight_bytes
from ...errors import LayerScopeError, OnnxMappingError, first_line
from ...files.safeio import OutputFolder
from ...files.workspace import work_dir
from ...graph import LayerGraph
from ...progress import Progress, Work
from ...resources import check_input_bytes
from .export import export_onnx, load_onnx
from .fusion import absorbed_nodes
from .results import MATCH_RANK, ONNX_SCHEMA_VERSION, ExporterKind, MatchHow, OnnxNodeSource, OnnxProfile, OpMapping, OptLevel
from .sources import source_map

__all__ = ["map_onnx"]

_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def _feed(session, inputs: Sequence[torch.Tensor] | None) -> dict[str, np.ndarray]:
    feed = {}
    metas = session.get_inputs()
    if inputs is not None and len(inputs) == len(metas):
        return {m.name: t.detach().cpu().numpy() for m, t in zip(metas, inputs, strict=True)}
    rng = np.random.default_rng(0)
    shapes = [[d if isinstance(d, int) and d > 0 else 1 for d in m.shape] for m in metas]
    itemsizes = [8 if "int64" in m.type or "double" in m.type else 2 if "16" in m.type else 1 if "bool" in m.type else 4
                 for m in metas]
    try:
        check_input_bytes(shapes, itemsizes)
    except LayerScopeError as exc:
        raise OnnxMappingError(f"The ONNX file declares inputs {', '.join(f'{m.name} {tuple(sh)}' for m, sh in zip(metas, shapes, strict=True))}: "
                               f"{exc}") from exc
    for m, shape in zip(metas, shapes, strict=True):
        if "float" in m.type:
            dtype = np.float16 if "float16" in m.type else np.float32
            feed[m.name] = rng.standard_normal(shape).astype(dtype)
        elif "bool" in m.type:
            feed[m.name] = np.ones(shape, dtype=bool)
        else:
            feed[m.name] = np.zeros(shape, dtype=np.int64 if "int64" in m.type else np.int32)
    return feed


def _shapes(arg: Any) -> tuple[tuple[int, ...], ...]:
    out = []
    for item in arg or []:
        for dims in (item.values() if isinstance(item, dict) else []):
            out.append(tuple(int(d) for d in dims))
    return tuple(out)


def map_onnx(
    model: torch.nn.Module | None = None,
    inputs: Sequence[torch.Tensor] | None = None,
    graph: LayerGraph | None = None,
    onnx_path: str | Path | None = None,
    opt_level: OptLevel | str = OptLevel.ALL,
    provider: str = "CPUExecutionProvider",
    runs: int = 20,
    warmup: int = 3,
    name: str = "model",
    workdir: str | Path | OutputFolder | None = None,
) -> Work[OnnxProfile]:
    """Export (or open) an ONNX model, profile it in ONNX Runtime, map every op to its source.

    Give ``model`` + ``inputs`` (+ the model's ``graph`` to map onto its layers), or ``onnx_path``
    of a plain .onnx file (ops then map to that file's own nodes). The exported and optimised
    graphs and the ORT trace are written to ``workdir`` and kept there, or to a scratch folder
    that is removed afterwards (the result's paths are then empty)."""
    import onnxruntime as ort

    level = OptLevel(opt_level)
    if provider not in ort.get_available_providers():
        raise OnnxMappingError(f"ONNX Runtime provider {provider!r} is not available here; available: {', '.join(ort.get_available_providers())}.")
    if runs < 1 or warmup < 0:
        raise OnnxMappingError("runs must be >= 1 and warmup >= 0.")
    if onnx_path is not None:
        src = Path(onnx_path).expanduser()
        if not src.is_file():
            raise OnnxMappingError(f"ONNX file not found: {src}.")
        needed = 2 * src.stat().st_size
    else:
        if model is None or inputs is None:
            raise OnnxMappingError("map_onnx needs a model with inputs, or an .onnx path.")
        needed = 3 * weight_bytes(model).total
    with work_dir("onnx", keep=workdir, needed_bytes=needed) as work:
        result = yield from _map_onnx(work, model, inputs, graph, onnx_path, level, provider, runs, warmup, name)
    if not workdir:  # the scratch folder is gone: do not point at files that no longer exist
        result = dataclasses.replace(result, onnx_path="" if onnx_path is None else str(onnx_path), optimized_path="")
    return result


def _map_onnx(work: Path, model, inputs, graph, onnx_path, level: OptLevel, provider: str, runs: int, warmup: int,
              name: str) -> Work[OnnxProfile]:
    import onnx
    import onnxruntime as ort

    steps = 4 + warmup + runs
    t0 = time.perf_counter()
    notes: list[str] = []
    if onnx_path is None:
        yield Progress("onnx", 0, steps, "exporting to ONNX")
        path = work / f"{name.replace(':', '_').replace('/', '_')}.onnx"
        exporter, notes = export_onnx(model, inputs, path, external_data=True)
    else:
        path, exporter = Path(onnx_path), ExporterKind.FILE
        graph = None
    original = load_onnx(path)
    export_s = time.perf_counter() - t0
    yield Progress("onnx", 1, steps, f"{len(original.graph.node)} ONNX nodes; building the ORT session ({level.value})")

    t1 = time.perf_counter()
    opt_path = work / f"{path.stem}.{level.value}.opt.onnx"
    so = _session_options(work, opt_path, level)
    try:
        session = ort.InferenceSession(str(path), so, providers=[provider])
    except Exception as exc:
        raise OnnxMappingError(f"ONNX Runtime could not load {path.name}: {first_line(exc)}") from exc
    session_s = time.perf_counter() - t1
    yield Progress("onnx", 2, steps, "session ready")
    feed = _feed(session, inputs if onnx_path is None else None)
    t2 = time.perf_counter()
    try:
        for i in range(warmup + runs):
            session.run(None, feed)
            yield Progress("onnx", 3 + i, steps, f"{'warm-up' if i < warmup else 'run'} {i + 1 if i < warmup else i + 1 - warmup}")
    except Exception as exc:
        raise OnnxMappingError(f"ONNX Runtime failed to run {path.name}: {first_line(exc)}") from exc
    trace = Path(session.end_profiling())
    profile_s = time.perf_counter() - t2
    node_events, runs_ms = _read_trace(trace, warmup)

    optimized = onnx.load(str(opt_path), load_external_data=False) if opt_path.is_file() else original
    absorbed = absorbed_nodes(original, optimized)
    sources = source_map(original, graph)
    order = {lid: i for i, lid in enumerate(graph.ids())} if graph is not None else {}
    ops = [op for n in optimized.graph.node
           if (op := _op_mapping(n, node_events.get(n.name, []), absorbed, sources, graph, order, provider, warmup)) is not None]
    yield Progress("onnx", steps, steps, f"{len(ops)} compiled ops mapped")
    e_med = statistics.median(runs_ms) if runs_ms else float("nan")
    eq = statistics.quantiles(runs_ms, n=4, method="inclusive") if len(runs_ms) > 1 else [e_med, e_med, e_med]
    return OnnxProfile(
        schema_version=ONNX_SCHEMA_VERSION, model_name=name, onnx_path=str(path), optimized_path=str(opt_path),
        exporter=exporter, notes=tuple(notes), opt_level=level, provider=provider, ort_version=ort.__version__,
        runs=runs, warmup=warmup, end_to_end_ms=e_med, end_to_end_p25_ms=eq[0], end_to_end_p75_ms=eq[2],
        export_seconds=export_s, session_seconds=session_s, profile_seconds=profile_s,
        has_source=graph is not None, ops=tuple(ops), nodes=tuple(sources.values()),
    )


def _session_options(work: Path, opt_path: Path, level: OptLevel) -> Any:
    """ORT session options: the optimisation level, the optimised graph saved (weights to a side file,
    so reading its nodes back loads no weights) and profiling on."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level.value])
    so.optimized_model_filepath = str(opt_path)
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", f"{opt_path.name}.data")
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    so.enable_profiling = True
    so.profile_file_prefix = str(work / "ort_profile")
    so.log_severity_level = 3
    return so


def _read_trace(trace: Path, warmup: int) -> tuple[dict[str, list[dict]], list[float]]:
    """ORT's profiling trace: kernel events per node, and the timed runs' model_run ms (warm-up dropped)."""
    node_events: dict[str, list[dict]] = collections.defaultdict(list)
    runs_ms: list[float] = []
    for e in json.loads(trace.read_text()):
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            node_events[e["name"].removesuffix("_kernel_time")].append(e)
        elif e.get("cat") == "Session" and e.get("name") == "model_run":
            runs_ms.append(e["dur"] / 1e3)
    return node_events, runs_ms[warmup:]


def _op_mapping(n: Any, events: list[dict], absorbed: dict[str, list[str]], sources: dict[str, OnnxNodeSource],
                graph: LayerGraph | None, order: dict[str, int], provider: str, warmup: int) -> OpMapping | None:
    """One compiled op: its timed kernel runs (after ``warmup``), the original nodes it absorbed and their source layers.
    None for an op that never ran (folded into an initializer, or a no-op)."""
    evs = events[warmup:]
    if not evs:
        return None
    durs = sorted(e["dur"] / 1e3 for e in evs)
    q = statistics.quantiles(durs, n=4, method="inclusive") if len(durs) > 1 else [durs[0], durs[0], durs[0]]
    orig = absorbed.get(n.name) or ([n.name] if n.name in sources else [])
    srcs = [sources[o] for o in orig if o in sources]
    if graph is None:
        layer_ids: tuple[str, ...] = ()
        how = MatchHow.ONNX_NODE if srcs else MatchHow.UNMAPPED
    else:
        ids = {lid for s in srcs for lid in s.layer_ids}
        layer_ids = tuple(sorted(ids, key=lambda x: order.get(x, 0)))
        mapped = [s for s in srcs if s.layer_ids]
        how = max((s.how for s in mapped), key=MATCH_RANK.__getitem__) if mapped else MatchHow.UNMAPPED
    args = evs[-1].get("args", {})
    return OpMapping(
        name=n.name, op_type=n.op_type, provider=args.get("provider", provider),
        latency_ms=statistics.median(durs), p25_ms=q[0], p75_ms=q[2],
        input_shapes=_shapes(args.get("input_type_shape")), output_shapes=_shapes(args.get("output_type_shape")),
        onnx_nodes=tuple(orig), layer_ids=layer_ids, how=how, source_lines=tuple(dict.fromkeys(s.source for s in srcs if s.source)),
    )
