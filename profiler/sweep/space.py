"""The search space of a sweep: compression recipes = technique × strength × which layers, plus
mixed precision guided by the sensitivity ranking.

JSON (``--space space.json``; every key optional, defaults below)::

    {"techniques": {"quantize": {"bits": [8, 4]}, "palettize": {"bits": [4, 2]},
                    "prune": {"sparsity": [0.5]}, "prune_channels": {"amount": [0.25]},
                    "cast": {"dtype": ["float16"]}},
     "layers": ["all", "top:3", "memory-bound", "compute-bound", "all-but-sensitive:2"],
     "mixed": {"bits": [4], "keep_int8": [1, 2]},
     "sensitivity": {"technique": "quantize", "bits": 4}}

``layers``: ``all``; ``top:K`` (the K slowest compressible layers, measured); ``memory-bound`` /
``compute-bound`` (against the roofline of this machine); ``all-but-sensitive:K`` (all but the K
layers the sensitivity pass ranks most sensitive, which stay float). ``mixed``: quantize every
layer to ``bits`` and the ``keep_int8`` most sensitive ones to int8 (mixed precision, AIMET-style).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..compression.plan import STRUCTURAL_KINDS, CompressionPlan, LayerSpec
from ..compression.specs import parse_params
from ..errors import BudgetError
from ..files.safeio import read_json
from ..profile import Profile
from .budgets import known_keys

__all__ = ["Recipe", "SearchSpace", "DEFAULT_SPACE"]

STRENGTH = {"quantize": "bits", "palettize": "bits", "prune": "sparsity", "prune_channels": "amount", "cast": "dtype"}
DEFAULT_SPACE: dict[str, Any] = {
    "techniques": {"quantize": {"bits": [8, 4]}, "palettize": {"bits": [4, 2]}, "prune": {"sparsity": [0.5]},
                   "prune_channels": {"amount": [0.25]}},
    "layers": ["all", "top:3", "memory-bound", "compute-bound", "all-but-sensitive:2"],
    "mixed": {"bits": [4], "keep_int8": [1, 2]},
    "sensitivity": {"technique": "quantize", "bits": 4},
}
_LAYERS = re.compile(r"^(all|memory-bound|compute-bound|top:[1-9]\d*|all-but-sensitive:[1-9]\d*)$")


@dataclass(frozen=True)
class Recipe:
    """One point of the space. ``technique`` "mixed": ``strength`` bits on every layer and the
    ``keep`` most sensitive layers at int8; otherwise ``technique`` at ``strength`` on ``layers``."""

    technique: str
    strength: Any  # bits, sparsity, amount or dtype
    layers: str = "all"
    keep: int = 0  # mixed: layers kept at int8

    @property
    def key(self) -> str:
        """Canonical text, unique per recipe: the resume key and the label in plots."""
        if self.technique == "mixed":
            return f"mixed int{self.strength} + int8 on {self.keep} most sensitive"
        s = self.strength
        what = {"quantize": f"int{s}", "palettize": f"palettize {s}-bit", "prune": f"prune {s:.0%}",
                "prune_channels": f"prune channels {s:.0%}", "cast": str(s)}.get(self.technique, f"{self.technique} {s}")
        return f"{what} on {self.layers}"

    def to_dict(self) -> dict[str, Any]:
        return {"technique": self.technique, "strength": self.strength, "layers": self.layers, "keep": self.keep}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        return cls(d["technique"], d["strength"], d.get("layers", "all"), int(d.get("keep", 0)))

    def plan(self, profile: Profile, sensitive: list[str]) -> CompressionPlan:
        """The CompressionPlan of this recipe on ``profile``; ``sensitive``: compressible layer ids,
        most sensitive first (the sensitivity pass)."""
        if self.technique == "mixed":
            specs = [LayerSpec("all", "quantize", {"bits": self.strength})]
            specs += [LayerSpec(lid, "quantize", {"bits": 8}) for lid in sensitive[: self.keep]]
            return CompressionPlan(tuple(specs), model=profile.model.name)
        params = {STRENGTH[self.technique]: self.strength}
        if self.layers.startswith("all-but-sensitive:"):
            k = int(self.layers.split(":", 1)[1])
            keep = set(sensitive[:k])
            ids = [lid for lid in sensitive if lid not in keep]
            if self.technique == "prune_channels":  # conv and linear modules, not the output's
                g = profile.graph
                ids = [lid for lid in ids if g[lid].module_path and g[lid].op_kind in STRUCTURAL_KINDS and lid not in g.output_layers]
            order = {lid: i for i, lid in enumerate(profile.graph.ids())}
            specs = [LayerSpec(lid, self.technique, params) for lid in sorted(ids, key=order.__getitem__)]
            return CompressionPlan(tuple(specs), model=profile.model.name)
        return CompressionPlan((LayerSpec(self.layers, self.technique, params),), model=profile.model.name)


def _ints(values: Any, where: str, low: int, high: int) -> list[int]:
    """A JSON list of whole numbers in [low, high], checked like a budget: one clean error naming the field."""
    if not isinstance(values, list) or not all(type(v) is int and low <= v <= high for v in values):
        raise BudgetError(f"{where} must be a list of whole numbers from {low} to {high}; got {str(values)[:80]}.")
    return values


@dataclass(frozen=True)
class SearchSpace:
    techniques: dict[str, list[Any]]  # technique -> strengths
    layers: tuple[str, ...]
    mixed_bits: tuple[int, ...] = ()
    mixed_keep: tuple[int, ...] = ()
    sensitivity_technique: str = "quantize"
    sensitivity_strength: Any = 4
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, data: Any, origin: str = "search space") -> SearchSpace:
        known_keys(data, list(DEFAULT_SPACE), origin, "search spaces")
        merged = {**DEFAULT_SPACE, **data}
        techs = merged["techniques"]
        if not isinstance(techs, dict) or not techs:
            raise BudgetError(f"{origin}: 'techniques' must map a technique to its strengths, e.g. {{\"quantize\": {{\"bits\": [8, 4]}}}}.")
        strengths: dict[str, list[Any]] = {}
        for tech, spec in techs.items():
            if tech not in STRENGTH:
                raise BudgetError(f"{origin}: technique {tech!r} is not one of {', '.join(STRENGTH)}.")
            name = STRENGTH[tech]
            values = spec.get(name) if isinstance(spec, dict) else None
            if not isinstance(values, list) or not values or set(spec) != {name}:
                raise BudgetError(f"{origin}: techniques.{tech} must be {{\"{name}\": [values]}}.")
            for v in values:
                try:
                    parse_params(tech, {name: v})
                except ValueError as exc:
                    raise BudgetError(f"{origin}: techniques.{tech}.{name} {v!r}: {exc}.") from exc
            strengths[tech] = list(dict.fromkeys(values))
        layers = merged["layers"]
        if not isinstance(layers, list) or not layers or not all(isinstance(s, str) and _LAYERS.match(s) for s in layers):
            raise BudgetError(f"{origin}: 'layers' must be a list of all, top:K, memory-bound, compute-bound or all-but-sensitive:K; "
                              f"got {layers!r}.")
        mixed = merged["mixed"] or {}
        if not isinstance(mixed, dict) or set(mixed) - {"bits", "keep_int8"}:
            raise BudgetError(f"{origin}: 'mixed' must be {{\"bits\": [4], \"keep_int8\": [1, 2]}} or null.")
        bits = _ints(mixed.get("bits", []), f"{origin}: mixed.bits", 2, 7)
        keep = _ints(mixed.get("keep_int8", []), f"{origin}: mixed.keep_int8", 1, 10_000)
        sens = merged["sensitivity"] or {}
        if not isinstance(sens, dict) or set(sens) - {"technique", "bits"} or sens.get("technique", "quantize") not in (
                "quantize", "palettize"):
            raise BudgetError(f"{origin}: 'sensitivity' must be {{\"technique\": \"quantize\" or \"palettize\", \"bits\": N}}.")
        s_tech = sens.get("technique", "quantize")
        s_bits = _ints([sens.get("bits", 4)], f"{origin}: sensitivity.bits", 1, 8)[0]
        try:
            parse_params(s_tech, {"bits": s_bits})
        except ValueError as exc:
            raise BudgetError(f"{origin}: sensitivity.bits {s_bits}: {exc}.") from exc
        return cls(strengths, tuple(dict.fromkeys(layers)), tuple(bits), tuple(keep), s_tech, s_bits, merged)

    @classmethod
    def load(cls, path: str | None) -> SearchSpace:
        if path is None:
            return cls.from_dict({}, "default search space")
        return cls.from_dict(read_json(path, "search space", BudgetError, max_bytes=2**20), f"search space {path}")

    @property
    def uses_sensitivity(self) -> bool:
        return bool(self.mixed_bits and self.mixed_keep) or any(s.startswith("all-but-sensitive") for s in self.layers)

    def recipes(self) -> list[Recipe]:
        """Every recipe of the grid, in a fixed order (the grid search and the resume key)."""
        out = [Recipe(t, s, layers) for t, values in self.techniques.items() for s in values for layers in self.layers
               if not (t == "cast" and layers.startswith("all-but"))]
        out += [Recipe("mixed", b, "all", k) for b, k in itertools.product(self.mixed_bits, self.mixed_keep)]
        return out

    def to_json(self) -> str:
        return json.dumps(self.raw)
