"""The Profile: everything measured about one model on one machine, JSON round-trip stable.

``Profile.rows()`` is the one joined per-layer view the CLI table, CSV and GUI all read;
``pipeline.profile_model`` makes one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import LayerScopeError, ProfileFormatError
from .files.safeio import atomic_write_text, csv_text, parse_json, read_json
from .files.serde import from_jsonable, to_jsonable
from .graph import CaptureMethod, Layer, LayerGraph
from .hardware import HardwareProfile
from .metrics import LayerMetrics
from .profile_check import inconsistency
from .roofline import Bound, RooflinePoint
from .timing import LayerTiming, TimingSummary

__all__ = ["SCHEMA_VERSION", "ModuleTotals", "ModelInfo", "RunInfo", "Profile", "LayerRow", "CSV_COLUMNS"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    name: str
    spec: str
    source_kind: str  # zoo | factory | pt2
    capture_method: CaptureMethod
    capture_notes: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtypes: tuple[str, ...]
    compute_dtype: str  # dtype of the model's floating-point weights (roofline peak picked for it)
    total_params: int  # distinct parameters of the model
    total_weight_bytes: int  # distinct parameter and buffer storages (weights.weight_bytes)
    submodule: str | None = None  # the part of ``spec`` profiled (--submodule); input_shapes are then its own
    model_input_shapes: tuple[tuple[int, ...], ...] = ()  # with a submodule: the whole model's inputs, to load it again


@dataclass(frozen=True)
class RunInfo:
    date: str
    torch_version: str
    python_version: str
    platform: str
    cpu: str
    layerscope_version: str


@dataclass(frozen=True)
class LayerRow:
    """One layer joined with all its overlays; computed, never stored."""

    layer: Layer
    metrics: LayerMetrics
    timing: LayerTiming | None
    point: RooflinePoint | None
    latency_share: float  # of the sum of per-layer medians
    noisy: bool = False  # its timing stayed noisy (TimingSummary.noisy_layers): left out of the headline ranking

    @property
    def bound(self) -> Bound:
        return self.point.bound if self.point else Bound.UNKNOWN


@dataclass(frozen=True)
class ModuleTotals:
    """A module (collapsed node) summed over the layers inside it."""

    path: str
    layers: int
    latency_ms: float
    latency_share: float
    flops: int  # known FLOPs only
    unknown_layers: int
    bytes_moved: int
    params: int
    flops_share: float = 0.0  # of the model's known FLOPs (what a static profile ranks by)

    def share(self, static: bool) -> float:
        """The share a chart shows: of FLOPs in a static profile, of measured time otherwise."""
        return self.flops_share if static else self.latency_share


@dataclass(frozen=True)
class Profile:
    schema_version: int
    model: ModelInfo
    run: RunInfo
    hardware: HardwareProfile
    graph: LayerGraph
    metrics: dict[str, LayerMetrics]
    timings: dict[str, LayerTiming]
    roofline: dict[str, RooflinePoint]
    summary: TimingSummary

    # ------------------------------------------------------------------ views
    def _cached(self, key: str, build):
        """Views computed once per Profile (frozen: stored with object.__setattr__, never serialised)."""
        value = self.__dict__.get(key)
        if value is None:
            value = build()
            object.__setattr__(self, key, value)
        return value

    def rows(self) -> list[LayerRow]:
        """Every layer joined with its overlays, in execution order (computed once; do not mutate)."""
        def build() -> list[LayerRow]:
            total = self.summary.sum_of_layer_medians_ms or 1.0
            noisy = set(self.summary.noisy_layers)
            out = []
            for layer in self.graph:
                t = self.timings.get(layer.id)
                out.append(LayerRow(layer, self.metrics[layer.id], t, self.roofline.get(layer.id), (t.latency_ms / total) if t else 0.0,
                                    layer.id in noisy))
            return out
        return self._cached("_rows_cache", build)

    def row_index(self) -> dict[str, int]:
        """Layer id -> position in ``rows()``."""
        return self._cached("_row_index_cache", lambda: {r.layer.id: i for i, r in enumerate(self.rows())})

    def row(self, layer_id: str) -> LayerRow:
        i = self.row_index().get(layer_id)
        if i is None:
            raise KeyError(f"no layer {layer_id!r} in this profile")
        return self.rows()[i]

    @property
    def static(self) -> bool:
        """Profiled without timing (``--static``): rankings go by FLOPs."""
        return self.summary.runs == 0 and not self.timings

    @property
    def rank_statistic(self) -> str:
        """What ``ranked`` orders timed layers by: "median", or "p25" when the machine was busy (see ``ranked``).
        Every view that shows a latency to rank by shows this one, and says which it is."""
        return "p25" if self.summary.busy else "median"

    def rank_ms(self, row: LayerRow) -> float | None:
        """A layer's latency by ``rank_statistic`` (None when it was not timed)."""
        t = row.timing
        if t is None:
            return None
        return t.p25_ms if self.rank_statistic == "p25" else t.latency_ms

    def slowest_first(self, layer_ids: list[str]) -> list[str]:
        """``layer_ids`` in ``ranked``'s order (by ``rank_ms``; untimed layers last, in their order)."""
        index, rows = self.row_index(), self.rows()
        return sorted(layer_ids, key=lambda lid: -(self.rank_ms(rows[index[lid]]) or 0.0) if lid in index else 0.0)

    def ranked(self, top: int | None = None, steady_only: bool = False) -> list[LayerRow]:
        """Layers by median latency, slowest first (by FLOPs in a static profile; by the 25th percentile when
        the machine was busy: preemption only ever adds time, so the fast quarter of the runs is what the
        layer costs, and that ranking held under a 4-process load where the median's did not); ``steady_only``
        leaves out the layers whose timing stayed noisy (``TimingSummary.noisy_layers``): the headline ranking."""
        if self.static:
            rows = sorted(self.rows(), key=lambda r: r.metrics.flops or 0, reverse=True)
            return rows[:top] if top else rows
        rows = sorted(self.rows(), key=lambda r: self.rank_ms(r) or 0.0, reverse=True)
        if steady_only:
            rows = [r for r in rows if not r.noisy]
        return rows[:top] if top else rows

    def module_table(self) -> dict[str, ModuleTotals]:
        """Totals of every module path that encloses a layer, in one pass over the layers."""
        def build() -> dict[str, ModuleTotals]:
            acc: dict[str, list] = {}
            for r in self.rows():
                t, m = r.timing, r.metrics
                for path in r.layer.parents:
                    a = acc.setdefault(path, [0, 0.0, 0, 0, 0, 0])
                    a[0] += 1
                    a[1] += t.latency_ms if t else 0.0
                    a[2] += m.flops or 0
                    a[3] += 0 if m.known else 1
                    a[4] += m.bytes_moved
                    a[5] += m.params
            total = self.summary.sum_of_layer_medians_ms or 1.0
            total_flops = self.total_flops or 1
            return {path: ModuleTotals(path, n, lat, lat / total, fl, unk, by, pa, fl / total_flops)
                    for path, (n, lat, fl, unk, by, pa) in acc.items()}
        return self._cached("_module_table_cache", build)

    def module_totals(self, path: str) -> ModuleTotals:
        """Totals of a module path, or of one layer when ``path`` is a layer id."""
        found = self.module_table().get(path)
        if found is not None:
            return found
        if path in self.graph:
            r = self.row(path)
            m = r.metrics
            return ModuleTotals(path, 1, r.timing.latency_ms if r.timing else 0.0, r.latency_share, m.flops or 0,
                                0 if m.known else 1, m.bytes_moved, m.params, (m.flops or 0) / (self.total_flops or 1))
        return ModuleTotals(path, 0, 0.0, 0.0, 0, 0, 0, 0)

    def groups(self, key: str = "type", depth: int = 1) -> dict[str, list[str]]:
        """Layer ids grouped by layer type (``"type"``) or by module at nesting ``depth``
        (``"module"``; top-level modules are depth 1, a layer above that depth is its own group)."""
        if key not in ("type", "module"):
            raise LayerScopeError(f"totals by {key!r}: use 'type' or 'module'")
        if depth < 1:
            raise LayerScopeError(f"module depth {depth}: top-level modules are depth 1")
        cache = self._cached("_groups_cache", dict)
        found = cache.get((key, depth))
        if found is None:
            found = {}
            for layer in self.graph:
                if key == "type":
                    group = layer.type_name
                else:
                    group = layer.parents[depth - 1] if len(layer.parents) >= depth else layer.id
                found.setdefault(group, []).append(layer.id)
            cache[(key, depth)] = found
        return found

    def group_of(self, layer_id: str, key: str = "type", depth: int = 1) -> str:
        layer = self.graph[layer_id]
        if key == "type":
            return layer.type_name
        return layer.parents[depth - 1] if len(layer.parents) >= depth else layer.id

    def totals_by(self, key: str = "type", depth: int = 1) -> list[ModuleTotals]:
        """Time, FLOPs, bytes and params summed per group of ``groups(key, depth)`` (``path`` holds
        the type name or module path), slowest first (most FLOPs first in a static profile)."""
        cache = self._cached("_totals_by_cache", dict)
        found = cache.get((key, depth))
        if found is not None:
            return found
        total = self.summary.sum_of_layer_medians_ms or 1.0
        total_flops = self.total_flops or 1
        rows, index = self.rows(), self.row_index()
        out = []
        for group, ids in self.groups(key, depth).items():
            lat, fl, unk, by, pa = 0.0, 0, 0, 0, 0
            for lid in ids:
                r = rows[index[lid]]
                t, m = r.timing, r.metrics
                lat += t.latency_ms if t else 0.0
                fl += m.flops or 0
                unk += 0 if m.known else 1
                by += m.bytes_moved
                pa += m.params
            out.append(ModuleTotals(group, len(ids), float(lat), lat / total, fl, unk, by, pa, fl / total_flops))
        out.sort(key=(lambda x: -x.flops) if self.static else (lambda x: -x.latency_ms))
        cache[(key, depth)] = out
        return out

    @property
    def total_flops(self) -> int:
        return sum(m.flops or 0 for m in self.metrics.values())

    @property
    def total_macs(self) -> int:
        return sum(m.macs or 0 for m in self.metrics.values())

    @property
    def unknown_layers(self) -> list[str]:
        return [lid for lid, m in self.metrics.items() if not m.known]

    def above_roof(self) -> list[str]:
        """Layers measured faster than the roof allows (see ``RooflinePoint.above_roof``), fastest first."""
        ids = [lid for lid, p in self.roofline.items() if p.above_roof]
        return sorted(ids, key=lambda lid: -(self.roofline[lid].roof_fraction or 0.0))

    def roof_warning(self) -> str | None:
        """The one sentence every face shows when layers beat the roof, or None."""
        ids = self.above_roof()
        if not ids:
            return None
        compute = [lid for lid in ids if self.roofline[lid].bound is Bound.COMPUTE]
        worst = self.roofline[ids[0]].roof_fraction or 0.0
        why = []
        if compute:
            why.append(f"{len(compute)} compute-bound: the calibrated peak reads low (run `layerscope calibrate` on a quiet machine)")
        if len(compute) < len(ids):
            why.append(f"{len(ids) - len(compute)} memory-bound: their data came from cache, faster than the DRAM roof")
        return (f"{len(ids)} layer(s) ran faster than the roof allows (up to {worst:.0%}, {ids[0]!r}): "
                + "; ".join(why) + ". Their '% roof' is marked '!' and is not a real efficiency.")

    def bound_counts(self) -> dict[Bound, int]:
        counts = {b: 0 for b in Bound}
        for p in self.roofline.values():
            counts[p.bound] += 1
        return counts

    # ------------------------------------------------------------------ I/O
    def report(self) -> dict[str, object]:
        """Every summary line the CLI prints, as data (saved with the profile; ignored when loading)."""
        s = self.summary
        return {
            "static": self.static, "total_flops": self.total_flops, "total_macs": self.total_macs,
            "bound_counts": {str(b): n for b, n in self.bound_counts().items()}, "unknown_layers": self.unknown_layers,
            "fidelity": None if self.static else s.fidelity, "warnings": [*s.warnings, *filter(None, [self.roof_warning()])],
            "above_roof": self.above_roof(), "noisy_layers": list(s.noisy_layers), "notes": [*self.model.capture_notes, *self.hardware.notes],
        }

    def to_json(self) -> str:
        """The profile as JSON (made once: the history record and ``--json`` write the same text)."""
        return self._cached("_json_cache", lambda: json.dumps({**to_jsonable(self), "report": to_jsonable(self.report())}, indent=1))

    @classmethod
    def from_json(cls, text: str | bytes, origin: str = "profile") -> Profile:
        return cls.from_data(parse_json(text, origin, ProfileFormatError), origin)

    @classmethod
    def from_data(cls, data: object, origin: str = "profile") -> Profile:
        """From parsed JSON: the schema, then every cross-field fact the views rely on (every
        overlay keyed by a layer of the graph, finite non-negative measurements, latency shares
        that add up, an acyclic graph), so a loaded profile cannot fail later in a view."""
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            got = data.get("schema_version") if isinstance(data, dict) else None
            raise ProfileFormatError(f"{origin}: schema_version {got!r} is not {SCHEMA_VERSION}; re-run `layerscope profile`.")
        try:
            profile = from_jsonable(cls, data)
        except LayerScopeError as exc:
            raise ProfileFormatError(f"{origin}: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProfileFormatError(f"{origin} is not a valid LayerScope profile: {exc}") from exc
        problem = inconsistency(profile)
        if problem:
            raise ProfileFormatError(f"{origin} is not a consistent LayerScope profile: {problem}. Re-run `layerscope profile`.")
        return profile

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_json(), "profile")

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        p = Path(path).expanduser()
        return cls.from_data(read_json(p, "profile", ProfileFormatError), f"profile {p}")

    def records(self) -> list[tuple]:
        """One tuple per layer, in graph order, with the fields of ``CSV_COLUMNS`` (None where unknown):
        what the CSV, the data frame and the notebook display show."""
        out = []
        for r in self.rows():
            m, t, p = r.metrics, r.timing, r.point
            out.append((
                r.layer.id, r.layer.op_kind, r.layer.module_type or r.layer.target,
                " ".join("x".join(map(str, o.shape)) for o in r.layer.activations),
                " ".join("x".join(map(str, o.shape)) for o in r.layer.outputs),
                m.params, m.weight_bytes, m.flops, m.macs, m.bytes_read, m.bytes_written,
                m.arithmetic_intensity, t and t.latency_ms, t and t.p25_ms, t and t.p75_ms,
                r.latency_share, r.bound.value, p and p.attained_gflops, p and p.roof_fraction,
                t and t.output_bytes, str(r.layer.source or ""),
            ))
        return out

    def to_csv(self) -> str:
        """One row per layer; names are text cells a spreadsheet does not evaluate (``safeio.csv_text``)."""
        share = CSV_COLUMNS.index("latency_share")
        return csv_text(CSV_COLUMNS, ([f"{v:.6f}" if k == share else v for k, v in enumerate(rec)] for rec in self.records()))

    def to_dataframe(self):
        """The layers as a pandas DataFrame (one row per layer, the CSV's columns; needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise LayerScopeError("Profile.to_dataframe needs pandas: pip install pandas (or use to_csv()).") from exc
        return pd.DataFrame(self.records(), columns=CSV_COLUMNS)

    def __repr__(self) -> str:
        m = self.model
        timed = "static (not timed)" if self.static else f"{self.summary.end_to_end_ms:.3g} ms end to end"
        return (f"<Profile {m.name}: {len(self.graph)} layers, {self.total_flops / 1e9:.3g} GFLOPs, {timed}, "
                f"on {self.hardware.name}>")

    def _repr_html_(self) -> str:
        """A notebook's display: the headline and the ten top layers."""
        from html import escape

        rows = "".join(
            f"<tr><td>{i}</td><td>{escape(r.layer.id)}</td><td>{escape(r.layer.type_name)}</td>"
            f"<td>{'-' if r.timing is None else f'{r.timing.latency_ms:.4g}'}</td><td>{r.latency_share:.1%}</td>"
            f"<td>{'unknown' if r.metrics.flops is None else f'{r.metrics.flops:,}'}</td><td>{r.bound.value}</td></tr>"
            for i, r in enumerate(self.ranked(10), 1))
        return (f"<p><b>{escape(repr(self)[1:-1])}</b></p><table><thead><tr><th>#</th><th>layer</th><th>type</th>"
                f"<th>latency ms</th><th>share</th><th>FLOPs</th><th>bound</th></tr></thead><tbody>{rows}</tbody></table>")


CSV_COLUMNS = [
    "layer", "op_kind", "type", "input_shapes", "output_shapes", "params", "weight_bytes", "flops", "macs",
    "bytes_read", "bytes_written", "arithmetic_intensity", "latency_ms", "latency_p25_ms", "latency_p75_ms",
    "latency_share", "bound", "attained_gflops", "roof_fraction", "activation_bytes", "source",
]
