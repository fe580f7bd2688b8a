"""Budgets a compressed model must meet, and the targets it must meet them on.

JSON (every key optional; ``layerscope sweep --budgets budgets.json``, or the same names as flags)::

    {"max_size_mib": 1.0, "max_size_ratio": 0.25,          # compressed ÷ original
     "max_latency_ms": 5.0, "max_latency_ratio": 0.9,
     "max_peak_memory_mib": 64,
     "max_top1_drop_points": 1.0,                           # needs labelled data
     "min_output_sqnr_db": 20, "min_output_cosine": 0.99,   # against the float model's output
     "targets": ["this", "raspberry-pi-5", "my-npu.json"]}

Latency on ``this`` is measured here (eager, median, interleaved with the float model); on a device
profile it is the roofline estimate of the compressed model on that device (Σ per layer of
max(FLOPs / peak, bytes / bandwidth), with compressed weights at their stored size), marked as
such. Size, peak memory and quality are the same on every target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from ..errors import BudgetError, HardwareProfileError
from ..files.safeio import finite, read_json
from ..hardware import HardwareProfile, load_device_profile

__all__ = ["known_keys", "Budgets", "Target", "BudgetCheck", "resolve_targets", "check_budgets", "BUDGET_KEYS"]

MIB = 2**20


def known_keys(data: Any, keys: tuple[str, ...] | list[str], origin: str, what: str) -> None:
    """``data`` is a JSON object holding only ``keys``, else a BudgetError naming the file and the keys."""
    if not isinstance(data, dict):
        raise BudgetError(f"{origin}: {what} must be a JSON object with keys {', '.join(keys)}.")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise BudgetError(f"{origin}: unknown key(s) {', '.join(unknown)}; {what} know {', '.join(keys)}.")


@dataclass(frozen=True)
class Budgets:
    max_size_mib: float | None = None
    max_size_ratio: float | None = None
    max_latency_ms: float | None = None
    max_latency_ratio: float | None = None
    max_peak_memory_mib: float | None = None
    max_top1_drop_points: float | None = None
    min_output_sqnr_db: float | None = None
    min_output_cosine: float | None = None
    targets: tuple[str, ...] = ("this",)

    @classmethod
    def from_dict(cls, data: Any, origin: str = "budgets") -> Budgets:
        known_keys(data, BUDGET_KEYS, origin, "budgets")
        values: dict[str, Any] = {}
        for k, v in data.items():
            if k == "targets":
                if isinstance(v, str):
                    v = [v]
                if not isinstance(v, list) or not v or not all(isinstance(t, str) and t for t in v):
                    raise BudgetError(f"{origin}: 'targets' must be a list of 'this', device profile names or .json paths.")
                values[k] = tuple(dict.fromkeys(v))
            elif v is not None:
                x = finite(v, k, origin, BudgetError)
                if x < 0 or (x == 0 and not k.startswith("min_") and k != "max_top1_drop_points"):
                    raise BudgetError(f"{origin}: '{k}' is {v!r}; it must be greater than zero.")
                if k == "min_output_cosine" and x > 1:
                    raise BudgetError(f"{origin}: 'min_output_cosine' is {v!r}; a cosine is at most 1.")
                values[k] = x
        return cls(**values)

    @classmethod
    def load(cls, path: str) -> Budgets:
        return cls.from_dict(read_json(path, "budgets", BudgetError, max_bytes=2**20), f"budgets {path}")

    def merged(self, overrides: dict[str, Any]) -> Budgets:
        """These budgets with the flags the user gave on top (None: not given)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["targets"] = list(data["targets"])
        data.update({k: v for k, v in overrides.items() if v is not None})
        return Budgets.from_dict(data, "budgets (file and flags)")

    @property
    def latency_target(self) -> str:
        """The target whose latency the trade-off's latency axis shows: this machine when it is one."""
        return "this" if "this" in self.targets else self.targets[0]

    @property
    def needs_labels(self) -> bool:
        return self.max_top1_drop_points is not None

    def limits(self) -> dict[str, float]:
        """The budgets that are set, by key."""
        return {f.name: v for f in fields(self) if f.name != "targets" and (v := getattr(self, f.name)) is not None}

    def text(self) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in self.limits().items()) or "none"


@dataclass(frozen=True)
class Target:
    """Where a candidate must fit: ``this`` machine (measured) or a device profile (roofline estimate)."""

    name: str  # as the user wrote it
    hardware: HardwareProfile | None  # None: this machine, measured

    @property
    def measured(self) -> bool:
        return self.hardware is None


def resolve_targets(names: tuple[str, ...]) -> tuple[Target, ...]:
    out = []
    for name in names:
        if name == "this":
            out.append(Target("this", None))
            continue
        try:
            out.append(Target(name, load_device_profile(name)))
        except HardwareProfileError as exc:
            raise BudgetError(f"budget target {name!r}: {exc}") from exc
    return tuple(out)


@dataclass(frozen=True)
class BudgetCheck:
    budget: str  # the key, e.g. max_size_ratio
    limit: float
    value: float | None  # None: not measurable for this candidate (e.g. top-1 without labels)
    ok: bool
    # a measured latency whose confidence interval holds the limit: not failed on noise (ok), but not settled either
    inconclusive: bool = False

    @property
    def excess(self) -> float:
        """How far past the limit, relative to it (0 when met): ranks the closest failing candidates."""
        if self.ok or self.value is None:
            return 0.0 if self.ok else math.inf
        if self.budget.startswith("min_"):
            return (self.limit - self.value) / max(abs(self.limit), 1e-9)
        return (self.value - self.limit) / max(abs(self.limit), 1e-9)


def _value(budget: str, m: dict[str, Any], target: str) -> float | None:
    lat = m["targets"].get(target, {})
    return {
        "max_size_mib": m["size_bytes"] / MIB,
        "max_size_ratio": m["size_ratio"],
        "max_latency_ms": lat.get("latency_ms"),
        "max_latency_ratio": lat.get("latency_ratio"),
        "max_peak_memory_mib": m["peak_memory_bytes"] / MIB if m.get("peak_memory_bytes") is not None else None,
        "max_top1_drop_points": m.get("top1_drop_points"),
        "min_output_sqnr_db": m.get("output_sqnr_db"),
        "min_output_cosine": m.get("output_cosine"),
    }[budget]


def _latency_interval(budget: str, m: dict[str, Any], target: str) -> tuple[float, float] | None:
    """The confidence interval of a measured latency budget's value (the paired runs', ``profiler.paired``)."""
    lat = m["targets"].get(target, {})
    low, high = lat.get("latency_ratio_low"), lat.get("latency_ratio_high")
    if not lat.get("measured") or low is None or high is None:
        return None
    if budget == "max_latency_ratio":
        return low, high
    if budget == "max_latency_ms" and lat.get("latency_ms_reference") is not None:
        return low * lat["latency_ms_reference"], high * lat["latency_ms_reference"]
    return None


def check_budgets(budgets: Budgets, metrics: dict[str, Any]) -> dict[str, list[BudgetCheck]]:
    """Per target, each budget that is set: its limit, the candidate's value, met or not. A measured latency whose
    interval holds the limit is *inconclusive*: never failed on noise (the paired verdict's three values)."""
    out: dict[str, list[BudgetCheck]] = {}
    for target in budgets.targets:
        checks = []
        for key, limit in budgets.limits().items():
            v = _value(key, metrics, target)
            ok = v is not None and not math.isnan(v) and (v >= limit if key.startswith("min_") else v <= limit)
            interval = _latency_interval(key, metrics, target) if v is not None else None
            inconclusive = interval is not None and interval[0] <= limit < interval[1]
            checks.append(BudgetCheck(key, limit, v, ok or inconclusive, inconclusive))
        out[target] = checks
    return out


BUDGET_KEYS = tuple(f.name for f in fields(Budgets))
