"""What an ONNX mapping holds: the exported nodes and where they map, the compiled ORT ops with their
timings, and the whole run (saved and reloaded as JSON)."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ...errors import OnnxMappingError
from ...files.safeio import parse_json, read_json
from ...files.serde import from_jsonable, to_jsonable

__all__ = ["ONNX_SCHEMA_VERSION", "OptLevel", "ExporterKind", "MatchHow", "MATCH_RANK", "OnnxNodeSource", "OpMapping", "OnnxProfile"]

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


MATCH_RANK = {MatchHow.SCOPE: 0, MatchHow.KIND_ORDER: 1, MatchHow.ONNX_NODE: 2, MatchHow.NEAREST: 3, MatchHow.UNMAPPED: 4}


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

    def ort_vs_eager(self, layer_ids: Iterable[str], eager_ms: dict[str, float]) -> dict[str, tuple[float | None, float | None]]:
        """Per layer: (ORT ms, ORT / eager ms), a fused op's time split by the eager shares
        (``layer_latency_ms``); None where ORT ran nothing for the layer, a ratio of None where eager
        timed nothing (a layer missing from ``eager_ms``) or took no time."""
        ort_ms = self.layer_latency_ms(eager_ms)
        out: dict[str, tuple[float | None, float | None]] = {}
        for lid in layer_ids:
            ort, eager = ort_ms.get(lid), eager_ms.get(lid, 0.0)
            out[lid] = (ort, ort / eager if ort is not None and eager > 0 else None)
        return out

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
        """The mapping, plus the summary lines the CLI prints (coverage, unmapped ops, totals): ignored when loading."""
        report = {"coverage_ops": self.coverage_ops, "coverage_time": self.coverage_time, "unmapped_ops": self.unmapped,
                  "total_op_ms": self.total_op_ms, "fused_ops": sum(o.fused for o in self.ops)}
        return json.dumps({**to_jsonable(self), "report": report}, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes, origin: str = "ONNX mapping") -> OnnxProfile:
        return cls._from_data(parse_json(text, origin, OnnxMappingError), origin)

    @classmethod
    def load(cls, path: str | Path, what: str = "ONNX mapping") -> OnnxProfile:
        """A ``layerscope onnx --json`` file; every failure names the file."""
        return cls._from_data(read_json(path, what, OnnxMappingError), f"{what} {path}")

    @classmethod
    def _from_data(cls, data: Any, origin: str) -> OnnxProfile:
        try:
            return from_jsonable(cls, data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise OnnxMappingError(f"{origin} is not a valid LayerScope ONNX mapping: {exc}") from exc
