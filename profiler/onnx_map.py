"""Map compiled ONNX Runtime ops back to source layers and their Python lines, with timings.

Pipeline: export the model to ONNX (torch.onnx dynamo exporter with its default graph optimiser,
as users ship it; TorchScript exporter as the fallback), build an ORT session at the chosen optimisation level (saving the optimised graph),
profile it, then map every compiled op in two steps:

1. ORT op -> original ONNX nodes, from tensors alone. ORT drops node metadata and renames fused
   nodes, but tensor names between fusions survive. Optimised ops connected by *new* tensors form
   one cluster (a fused Conv and its layout ``ReorderOutput``); walking the original graph back from
   the cluster's surviving output tensors to surviving tensors gives exactly the nodes it absorbed.
2. ONNX node -> layer ids, from the exporter's metadata (``pkg.torch.onnx.name_scopes``: module
   paths, then the exported graph's node name). A module called twice is told apart by call order;
   a functional op by its parent module, op kind and order. A node the exporter's optimiser
   rewrote says so (``pkg.onnxscript.rewriter.rule_name``): ``FuseBatchNormIntoConv`` keeps the
   BatchNorm's scope and also stands for the conv/linear layer feeding it. Exporter helpers (Shape, Constant,
   CastLike…) carry the scope of the aten op they lower. TorchScript-exported nodes are matched by
   their scope names (``/layer1/layer1.0/conv1/Conv``). What is left maps to its nearest mapped
   neighbour in the graph and says so; anything still unmapped is listed by name.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import dataclasses
import io
import json
import re
import statistics
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch

from .capture import quiet_torch_logs
from .errors import LayerScopeError, OnnxMappingError, OutputError
from .graph import LayerGraph
from .opkinds import aten_kind
from .progress import Progress, Work
from .resources import check_input_bytes
from .safeio import parse_json
from .timing import _weight_bytes
from .serde import from_jsonable, to_jsonable
from .workspace import work_dir

__all__ = [
    "OptLevel", "ExporterKind", "MatchHow", "OnnxNodeSource", "OpMapping", "OnnxProfile",
    "export_onnx", "load_onnx", "source_map", "absorbed_nodes", "map_onnx", "ONNX_SCHEMA_VERSION",
]

ONNX_SCHEMA_VERSION = 1


class OptLevel(StrEnum):
    DISABLED = "disabled"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


class ExporterKind(StrEnum):
    DYNAMO = "torch.onnx (dynamo)"
    TORCHSCRIPT = "torch.onnx (TorchScript)"
    FILE = "ONNX file"


class MatchHow(StrEnum):
    SCOPE = "scope"  # module path from the exporter's name scopes (or TorchScript scope names)
    KIND_ORDER = "parent+kind"  # functional op: parent module, op kind and call order
    NEAREST = "nearest"  # exporter-introduced node: nearest mapped neighbour in the graph
    ONNX_NODE = "onnx node"  # no PyTorch source: mapped to the ONNX graph's own nodes
    UNMAPPED = "unmapped"


_HOW_RANK = {MatchHow.SCOPE: 0, MatchHow.KIND_ORDER: 1, MatchHow.ONNX_NODE: 2, MatchHow.NEAREST: 3, MatchHow.UNMAPPED: 4}


@dataclass(frozen=True)
class OnnxNodeSource:
    """One exported ONNX node, every source hint the exporter left on it, and the layers it maps to."""

    node: str
    op_type: str
    layer_ids: tuple[str, ...]
    how: MatchHow
    source: str = ""  # user file:line from the exporter's stack trace, when there is one
    name_scopes: tuple[str, ...] = ()  # pkg.torch.onnx.name_scopes
    class_hierarchy: str = ""  # pkg.torch.onnx.class_hierarchy
    fx_node: str = ""  # pkg.torch.onnx.fx_node (the exported graph's node)
    rewrite_rule: str = ""  # pkg.onnxscript.rewriter.rule_name, when the exporter's optimiser rewrote it


@dataclass(frozen=True)
class OpMapping:
    """One compiled ORT op with its timing and the source it came from."""

    name: str
    op_type: str
    provider: str
    latency_ms: float  # median over the timed runs
    p25_ms: float
    p75_ms: float
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]
    onnx_nodes: tuple[str, ...]  # original (exported) ONNX nodes this op absorbed
    layer_ids: tuple[str, ...]  # source layers, in graph order
    how: MatchHow  # the weakest match among its nodes
    source_lines: tuple[str, ...]

    @property
    def fused(self) -> bool:
        return len(self.layer_ids) > 1 or len(self.onnx_nodes) > 1

    @property
    def mapped(self) -> bool:
        return self.how is not MatchHow.UNMAPPED


@dataclass(frozen=True)
class OnnxProfile:
    schema_version: int
    model_name: str
    onnx_path: str
    optimized_path: str
    exporter: ExporterKind
    notes: tuple[str, ...]
    opt_level: OptLevel
    provider: str
    ort_version: str
    runs: int
    warmup: int
    end_to_end_ms: float  # median ORT model_run
    end_to_end_p25_ms: float
    end_to_end_p75_ms: float
    export_seconds: float
    session_seconds: float
    profile_seconds: float
    has_source: bool  # False for a plain .onnx file: ops map to ONNX nodes only
    ops: tuple[OpMapping, ...]
    nodes: tuple[OnnxNodeSource, ...]  # every original ONNX node and where it maps

    @property
    def total_op_ms(self) -> float:
        return sum(o.latency_ms for o in self.ops)

    @property
    def unmapped(self) -> list[str]:
        return [o.name for o in self.ops if not o.mapped]

    @property
    def coverage_ops(self) -> float:
        return sum(o.mapped for o in self.ops) / len(self.ops) if self.ops else 0.0

    @property
    def coverage_time(self) -> float:
        total = self.total_op_ms
        return sum(o.latency_ms for o in self.ops if o.mapped) / total if total else 0.0

    def ranked(self) -> list[OpMapping]:
        return sorted(self.ops, key=lambda o: o.latency_ms, reverse=True)

    def ops_for_layer(self, layer_id: str) -> list[OpMapping]:
        return [o for o in self.ops if layer_id in o.layer_ids]

    def layer_latency_ms(self, weights: dict[str, float] | None = None) -> dict[str, float]:
        """ORT time per source layer. A fused op's time is split over its layers in proportion
        to ``weights`` (e.g. each layer's eager latency), evenly when none are given: ORT times
        the fused kernel as one, so any per-layer split is an estimate."""
        out: dict[str, float] = collections.defaultdict(float)
        for o in self.ops:
            w = [max(weights.get(lid, 0.0), 0.0) if weights else 1.0 for lid in o.layer_ids]
            total = sum(w) or float(len(w))
            for lid, wi in zip(o.layer_ids, w, strict=True):
                out[lid] += o.latency_ms * ((wi if sum(w) else 1.0) / total)
        return dict(out)

    def to_json(self) -> str:
        return json.dumps(to_jsonable(self), indent=1)

    @classmethod
    def from_json(cls, text: str | bytes, origin: str = "ONNX mapping") -> OnnxProfile:
        data = parse_json(text, origin, OnnxMappingError)
        try:
            return from_jsonable(cls, data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise OnnxMappingError(f"{origin} is not a valid LayerScope ONNX mapping: {exc}") from None


# --------------------------------------------------------------------------- export / load
_OP_RES = (re.compile(r"\b[A-Za-z_][A-Za-z_0-9]*::[A-Za-z_][A-Za-z_0-9]*"), re.compile(r"\baten\.[A-Za-z_0-9]+(?:\.[A-Za-z_0-9]+)?"))


def export_onnx(model: torch.nn.Module, inputs: Sequence[torch.Tensor], path: Path,
                external_data: bool | None = None) -> tuple[ExporterKind, list[str]]:
    """Export with the dynamo exporter (own optimiser off), TorchScript exporter as fallback.

    ``external_data`` True writes the weights to ``<path>.data`` as they stream out of the model
    (work files: nothing weight-sized is built in memory); None: one file unless it is over 2 GB."""
    notes: list[str] = []
    args = tuple(inputs)
    if not path.parent.is_dir():
        raise OutputError(f"Cannot write {path}: the folder {path.parent} does not exist.")
    try:
        with quiet_torch_logs(), contextlib.redirect_stdout(io.StringIO()):
            prog = torch.onnx.export(model, args, dynamo=True, external_data=False, verbose=False)
    except Exception as exc:  # noqa: BLE001 - fall back, then report both
        dynamo_text = f"{exc} {exc.__cause__ or ''}"
        dynamo_err = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    else:
        try:
            prog.save(str(path), external_data=external_data)
        except OSError as exc:
            raise OutputError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
        return ExporterKind.DYNAMO, notes
    try:
        with quiet_torch_logs(), contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(model, args, str(path), dynamo=False)
        notes.append(f"the dynamo exporter failed ({dynamo_err}); used the TorchScript exporter (no node metadata)")
        return ExporterKind.TORCHSCRIPT, notes
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
    except Exception as exc:  # noqa: BLE001 - neither exporter: name the op if we can
        text = f"{exc} {dynamo_text}"
        ops = [m.group(0) for r in _OP_RES for m in r.finditer(text) if not m.group(0).startswith(("prim::", "aten::add"))]
        raise OnnxMappingError(
            f"Neither ONNX exporter could export {type(model).__name__}"
            + (f" (unsupported op {ops[0]})" if ops else "")
            + f". dynamo: {dynamo_err} | TorchScript: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from None


def load_onnx(path: str | Path, weights: bool = False):
    """The ONNX model at ``path``, checked. Without ``weights``, initializers stored in external
    data files stay on disk: the node graph is all the mapping needs."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise OnnxMappingError(f"ONNX file not found: {p}.")
    try:
        onnx.checker.check_model(str(p))  # from the file: external data is checked where it lies
        model = onnx.load(str(p), load_external_data=weights)
    except Exception as exc:  # noqa: BLE001 - any parse/check failure is the file's fault
        raise OnnxMappingError(f"{p} is not a valid ONNX model (corrupt or truncated?): {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    if not model.graph.node:
        raise OnnxMappingError(f"{p} has an empty graph.")
    return model


# --------------------------------------------------------------------------- ONNX node -> layer
def _meta(node) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def _scopes(meta: dict[str, str]) -> list[str] | None:
    raw = meta.get("pkg.torch.onnx.name_scopes")
    if not raw:
        return None
    try:
        val = ast.literal_eval(raw)
        return [str(v) for v in val] if isinstance(val, (list, tuple)) else None
    except (ValueError, SyntaxError):
        return None


_FX_TARGET_RE = re.compile(r"target=torch\.ops\.(aten\.[A-Za-z_0-9]+\.[A-Za-z_0-9]+)")
_STACK_RE = re.compile(r'File "([^"]+)", line (\d+)')


def _user_line(meta: dict[str, str]) -> str:
    trace = meta.get("pkg.torch.onnx.stack_trace", "")
    torch_dir = str(Path(torch.__file__).parent)
    frames = [(f, n) for f, n in _STACK_RE.findall(trace) if not f.startswith(torch_dir) and not f.startswith("<")]
    return f"{frames[-1][0]}:{frames[-1][1]}" if frames else ""


def _fx_kind(meta: dict[str, str]) -> str:
    m = _FX_TARGET_RE.search(meta.get("pkg.torch.onnx.fx_node", ""))
    if not m:
        return "unknown"
    return aten_kind(types.SimpleNamespace(__name__=m.group(1).split(".", 1)[1]))  # "conv2d.default"


_KIND_ALIASES = {"adaptive_avg_pool": {"reduce"}, "reduce": {"adaptive_avg_pool"}, "linear": {"matmul", "addmm"},
                 "matmul": {"linear"}, "identity": {"view"}, "view": {"identity"}}


def source_map(model, graph: LayerGraph | None) -> dict[str, OnnxNodeSource]:
    """Where every node of an exported ONNX model comes from."""
    nodes = list(model.graph.node)
    if graph is None:
        return {n.name: OnnxNodeSource(n.name, n.op_type, (), MatchHow.ONNX_NODE) for n in nodes}
    by_path: dict[str, list[str]] = collections.defaultdict(list)  # module path -> layer ids by call
    functional: dict[str, list[str]] = collections.defaultdict(list)  # parent path -> functional layer ids
    for layer in graph:
        if layer.module_path is not None:
            by_path[layer.module_path].append(layer.id)
        else:
            functional[layer.parents[-1] if layer.parents else ""].append(layer.id)
    call_seen: dict[str, list[str]] = collections.defaultdict(list)  # module path -> fx node names seen
    func_used: dict[str, str] = {}  # exported fx node name (scoped) -> layer id
    taken: set[str] = set()
    out: dict[str, OnnxNodeSource] = {}
    for n in nodes:
        meta = _meta(n)
        scopes = _scopes(meta)
        line = _user_line(meta)
        layer_ids: tuple[str, ...] = ()
        how = MatchHow.UNMAPPED
        if scopes and len(scopes) >= 2:
            fx_name, path = scopes[-1], scopes[-2]
            if path in by_path:  # a leaf module call
                calls = call_seen[path]
                if fx_name not in calls:
                    calls.append(fx_name)
                ids = by_path[path]
                layer_ids, how = (ids[min(calls.index(fx_name), len(ids) - 1)],), MatchHow.SCOPE
                if "FuseBatchNormInto" in meta.get("pkg.onnxscript.rewriter.rule_name", ""):
                    feeders = [p for p in graph.predecessors(layer_ids[0])
                               if graph[p].op_kind in ("conv", "conv_transpose", "linear")]
                    layer_ids = tuple(feeders) + layer_ids
            else:  # a functional op inside module `path`
                key = f"{path}/{fx_name}"
                if key not in func_used:
                    kind = _fx_kind(meta)
                    cands = [c for c in functional.get(path, []) if c not in taken]
                    match = [c for c in cands if graph[c].op_kind == kind]
                    match = match or [c for c in cands if graph[c].op_kind in _KIND_ALIASES.get(kind, ())]
                    if match:
                        func_used[key] = match[0]
                        taken.add(match[0])
                if key in func_used:
                    layer_ids, how = (func_used[key],), MatchHow.KIND_ORDER
        elif n.name.startswith("/"):  # TorchScript exporter: /layer1/layer1.0/conv1/Conv
            parts = [p for p in n.name.split("/")[1:-1] if p]
            for comp in reversed(parts):
                if comp in by_path:
                    layer_ids, how = (by_path[comp][0],), MatchHow.SCOPE
                    break
        out[n.name] = OnnxNodeSource(n.name, n.op_type, layer_ids, how, line, tuple(scopes or ()),
                                     meta.get("pkg.torch.onnx.class_hierarchy", ""), meta.get("pkg.torch.onnx.fx_node", ""),
                                     meta.get("pkg.onnxscript.rewriter.rule_name", ""))
    _fill_nearest(nodes, out)
    return out


def _fill_nearest(nodes, out: dict[str, OnnxNodeSource]) -> None:
    """Unmapped nodes take the layers of the nearest mapped node along data edges (BFS)."""
    producer: dict[str, str] = {}
    consumers: dict[str, list[str]] = collections.defaultdict(list)
    for n in nodes:
        for t in n.output:
            producer[t] = n.name
        for t in n.input:
            consumers[t].append(n.name)
    by_name = {n.name: n for n in nodes}

    def neighbours(name: str) -> list[str]:
        n = by_name[name]
        # consumers first: a Constant/Shape helper belongs to the op that uses it
        return [c for t in n.output for c in consumers.get(t, [])] + [producer[t] for t in n.input if t in producer]

    for n in nodes:
        if out[n.name].how is not MatchHow.UNMAPPED:
            continue
        seen, queue = {n.name}, collections.deque([n.name])
        while queue:
            cur = queue.popleft()
            src = out[cur]
            if src.how not in (MatchHow.UNMAPPED, MatchHow.NEAREST) and src.layer_ids:
                out[n.name] = dataclasses.replace(out[n.name], layer_ids=src.layer_ids, how=MatchHow.NEAREST,
                                                  source=out[n.name].source or src.source)
                break
            for nb in neighbours(cur):
                if nb not in seen:
                    seen.add(nb)
                    queue.append(nb)


# --------------------------------------------------------------------------- ORT op -> ONNX nodes
_FOLDABLE = frozenset({"BatchNormalization", "Identity", "Dropout", "Add", "Mul", "Sub", "Div", "Relu", "Clip",
                       "Sigmoid", "LeakyRelu", "HardSigmoid", "HardSwish", "Tanh"})
_ACTIVATIONS = ("Relu", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu", "Tanh", "HardSwish")
_DERIVED_SUFFIX = re.compile(r"(_nchwc|/[A-Za-z]+Fusion|_token_\d+|_new_reshape|_output)$")


def absorbed_nodes(original, optimized) -> dict[str, list[str]]:
    """For each optimised node, the original nodes it computes (see module docstring).

    Every optimised node gets anchor tensors from the original graph: its outputs that still
    exist, else the original tensor/node its name was derived from (ORT names layout-transformed
    and fused nodes after them: ``relu_15_nchwc``, ``node_MatMul_9/MatMulAddFusion``). Walking the
    original graph back from the anchors, up to any other node's anchor or a surviving tensor,
    collects the nodes it absorbed. Helpers with no anchor (``ReorderInput``) join their consumer.
    """
    producer: dict[str, object] = {}
    orig_names = {n.name: n for n in original.graph.node}
    orig_tensors: set[str] = set()
    for n in original.graph.node:
        orig_tensors.update(n.input)
        orig_tensors.update(n.output)
        for t in n.output:
            producer[t] = n
    opt_nodes = list(optimized.graph.node)
    opt_tensors = {t for n in opt_nodes for t in (*n.input, *n.output)}
    stop = {i.name for i in original.graph.input} | {i.name for i in original.graph.initializer} | {""}
    surviving = orig_tensors & opt_tensors

    def anchors_of(n) -> list[str]:
        outs = [t for t in n.output if t in surviving and t in producer]
        if outs:
            return outs
        base = n.name
        for _ in range(4):
            if base in producer:
                return [base]
            if base in orig_names:
                return [t for t in orig_names[base].output if t in producer]
            stripped = _DERIVED_SUFFIX.sub("", base)
            if stripped == base:
                break
            base = stripped
        return []

    orig_consumers: dict[str, list] = collections.defaultdict(list)
    for n in original.graph.node:
        for t in n.input:
            orig_consumers[t].append(n)

    def extend_forward(n, ts: list[str]) -> list[str]:
        """A layout-transformed conv named after its own output may also have absorbed the
        residual Add (its 4th, Sum, input) and the activation after it (its attribute)."""
        if not ts or any(t in surviving for t in ts):
            return ts
        attrs = {a.name for a in n.attribute}
        has_sum = len(n.input) > 3 and bool(n.input[3])
        t = ts[0]
        for op_types, wanted in ((("Add",), has_sum), (_ACTIVATIONS, "activation" in attrs)):
            users = orig_consumers.get(t, [])
            if wanted and len(users) == 1 and users[0].op_type in op_types:
                t = users[0].output[0]
        return [t]

    base = {n.name: anchors_of(n) for n in opt_nodes}
    anchors = {n.name: extend_forward(n, base[n.name]) for n in opt_nodes}
    boundary = surviving | {t for ts in anchors.values() for t in ts} | {t for ts in base.values() for t in ts}
    orig_index = {name: k for k, name in enumerate(orig_names)}
    result: dict[str, list[str]] = {}
    for n in opt_nodes:
        absorbed: dict[str, None] = {}
        own = set(base[n.name])
        stack = [producer[t] for t in anchors[n.name]]
        while stack:
            node = stack.pop()
            if node.name in absorbed:
                continue
            absorbed[node.name] = None
            for t in node.input:
                if t in stop or (t in boundary and t not in own) or t not in producer:
                    continue
                stack.append(producer[t])
        result[n.name] = sorted(absorbed, key=lambda x: orig_index.get(x, 0))
    # nodes ORT removed by folding them into their producer (e.g. BatchNormalization folded into
    # Conv weights, Identity/Dropout dropped) belong to the op that produces their input
    absorbed_any = {x for names in result.values() for x in names}
    for node in original.graph.node:
        if node.name in absorbed_any or node.op_type not in _FOLDABLE:
            continue
        src = next((producer[t].name for t in node.input if t in producer), None)
        for names in result.values():
            if src is not None and src in names and node.name not in names:
                names.append(node.name)
    # helpers with no anchor take their consumer's nodes (else their producer's)
    consumers: dict[str, list[str]] = collections.defaultdict(list)
    made_by: dict[str, str] = {}
    for n in opt_nodes:
        for t in n.input:
            consumers[t].append(n.name)
        for t in n.output:
            made_by[t] = n.name
    for _ in range(3):  # chains of helpers
        for n in opt_nodes:
            if result[n.name]:
                continue
            near = [c for t in n.output for c in consumers.get(t, [])] + [made_by[t] for t in n.input if t in made_by]
            donor = next((x for x in near if result.get(x)), None)
            if donor:
                result[n.name] = list(result[donor])
    return result


# --------------------------------------------------------------------------- ORT profiling
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
        raise OnnxMappingError(f"The ONNX file declares inputs {', '.join(f'{m.name} {tuple(sh)}' for m, sh in zip(metas, shapes))}: "
                               f"{exc}") from None
    for m, shape in zip(metas, shapes, strict=True):
        if "float" in m.type:
            dtype = np.float16 if "float16" in m.type else np.float32
            feed[m.name] = rng.standard_normal(shape).astype(dtype)
        elif "bool" in m.type:
            feed[m.name] = np.ones(shape, dtype=bool)
        else:
            feed[m.name] = np.zeros(shape, dtype=np.int64 if "int64" in m.type else np.int32)
    return feed


def _shapes(arg: object) -> tuple[tuple[int, ...], ...]:
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
    workdir: str | Path | None = None,
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
        needed = 3 * _weight_bytes(model)[0]
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
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level.value])
    so.optimized_model_filepath = str(opt_path)
    # the optimised graph's weights go to a side file, so reading its nodes back loads no weights
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", f"{opt_path.name}.data")
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    so.enable_profiling = True
    so.profile_file_prefix = str(work / "ort_profile")
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), so, providers=[provider])
    except Exception as exc:  # noqa: BLE001 - ORT rejects the model
        raise OnnxMappingError(f"ONNX Runtime could not load {path.name}: {str(exc).strip().splitlines()[0]}") from None
    session_s = time.perf_counter() - t1
    yield Progress("onnx", 2, steps, "session ready")
    feed = _feed(session, inputs if onnx_path is None else None)
    t2 = time.perf_counter()
    try:
        for i in range(warmup + runs):
            session.run(None, feed)
            yield Progress("onnx", 3 + i, steps, f"{'warm-up' if i < warmup else 'run'} {i + 1 if i < warmup else i + 1 - warmup}")
    except Exception as exc:  # noqa: BLE001 - wrong inputs for a plain file, typically
        raise OnnxMappingError(f"ONNX Runtime failed to run {path.name}: {str(exc).strip().splitlines()[0]}") from None
    trace = Path(session.end_profiling())
    profile_s = time.perf_counter() - t2
    events = json.loads(trace.read_text())
    node_events: dict[str, list[dict]] = collections.defaultdict(list)
    runs_ms: list[float] = []
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            node_events[e["name"].removesuffix("_kernel_time")].append(e)
        elif e.get("cat") == "Session" and e.get("name") == "model_run":
            runs_ms.append(e["dur"] / 1e3)
    runs_ms = runs_ms[warmup:]

    optimized = onnx.load(str(opt_path), load_external_data=False) if opt_path.is_file() else original
    absorbed = absorbed_nodes(original, optimized)
    sources = source_map(original, graph)
    order = {lid: i for i, lid in enumerate(graph.ids())} if graph is not None else {}
    ops: list[OpMapping] = []
    for n in optimized.graph.node:
        evs = node_events.get(n.name, [])[warmup:]
        if not evs:
            continue  # not executed (folded into an initializer, or a no-op)
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
            how = max((s.how for s in mapped), key=_HOW_RANK.get) if mapped else MatchHow.UNMAPPED
        lines = tuple(dict.fromkeys(s.source for s in srcs if s.source))
        args = evs[-1].get("args", {})
        ops.append(OpMapping(
            name=n.name, op_type=n.op_type, provider=args.get("provider", provider),
            latency_ms=statistics.median(durs), p25_ms=q[0], p75_ms=q[2],
            input_shapes=_shapes(args.get("input_type_shape")), output_shapes=_shapes(args.get("output_type_shape")),
            onnx_nodes=tuple(orig), layer_ids=layer_ids, how=how, source_lines=lines,
        ))
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
