"""One typed, frozen parameter class per compression technique: the single home of every
technique's parameters, their defaults, valid ranges and cross-field rules.

A plan's JSON ``params`` object is validated into one of these (``parse_params``); everything
downstream (apply, estimate, the export adapters, diagnostics, the app's sliders) reads attributes,
never a dict with a default restated at the call site.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

__all__ = [
    "Technique", "Granularity", "Calibration", "CastDtype", "Norm", "Limits", "TechniqueParams", "QuantizeParams",
    "CastParams", "PalettizeParams", "PruneParams", "PruneChannelsParams", "PARAMS", "STRUCTURAL", "TECHNIQUES",
    "CALIBRATIONS", "parse_params", "limits", "default",
]


class Technique(StrEnum):
    QUANTIZE = "quantize"
    CAST = "cast"
    PALETTIZE = "palettize"
    PRUNE = "prune"
    PRUNE_CHANNELS = "prune_channels"


class Granularity(StrEnum):
    PER_TENSOR = "per_tensor"
    PER_CHANNEL = "per_channel"
    GROUP = "group"


class Calibration(StrEnum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"


class CastDtype(StrEnum):
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class Norm(StrEnum):
    L1 = "l1"
    L2 = "l2"


@dataclass(frozen=True)
class Limits:
    """A numeric parameter's valid interval; ``hi=None`` means unbounded above."""
    lo: float
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        above = v > self.lo if self.lo_open else v >= self.lo
        below = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return above and below

    def text(self, integer: bool) -> str:
        kind = "an integer" if integer else "a number"
        if self.hi is None:
            return f"{kind} ≥ {self.lo:g}" if not (integer and self.lo == 1) else "a positive integer"
        if integer:
            return f"{kind} from {self.lo:g} to {self.hi:g}"
        return f"{kind} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


def _num(default: Any, lo: float, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
         help: str = "") -> Any:
    return field(default=default, metadata={"limits": Limits(lo, hi, lo_open, hi_open), "help": help})


def _opt(default: Any, help: str = "") -> Any:
    return field(default=default, metadata={"help": help})


class TechniqueParams:
    """Base of the per-technique parameter classes (frozen dataclasses)."""
    technique: ClassVar[Technique]
    structural: ClassVar[bool] = False  # changes shapes (applied before the weight techniques)

    def check(self) -> None:
        """Cross-field rules; raise ValueError naming the field."""

    def relevant(self, name: str) -> bool:
        """Whether a field matters given the others (``group_size`` only for group granularity…)."""
        return True

    def describe(self) -> str:
        return ", ".join(f"{k}={_show(v)}" for k, v in self.to_dict().items())

    def to_dict(self) -> dict[str, Any]:
        """The relevant, set fields, JSON-ready (what a plan would write)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if self.relevant(f.name) and getattr(self, f.name) is not None}


def _show(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _plain(v: Any) -> Any:
    return str(v) if isinstance(v, StrEnum) else v


@dataclass(frozen=True)
class QuantizeParams(TechniqueParams):
    """Linear weight quantisation, optionally with int8 activation fake-quant."""
    technique: ClassVar[Technique] = Technique.QUANTIZE
    ACTIVATION_BITS: ClassVar[int] = 8  # activations are int8; with them the weights must be int8 too

    bits: int = _num(8, 2, 8, help="weight bits")
    symmetric: bool = _opt(True, "symmetric (zero point 0) or asymmetric weight grid")
    granularity: Granularity = _opt(Granularity.PER_CHANNEL, "one scale per tensor, per output channel or per group")
    group_size: int = _num(32, 1, help="consecutive weights per scale with granularity=group")
    activations: bool = _opt(False, "also fake-quantise the layer's input to int8")
    act_calibration: Calibration = _opt(Calibration.MINMAX, "how the activation range is calibrated")
    act_percentile: float = _num(99.99, 90, 100, help="the percentile with act_calibration=percentile")

    def check(self) -> None:
        if self.activations and self.bits != self.ACTIVATION_BITS:
            raise ValueError(f"'activations' quantises to int8 and needs int8 weights (bits=8), not bits={self.bits}: "
                             f"every exporter LayerScope writes to (ONNX Runtime QDQ, torch.ao, Core ML) pairs int8 "
                             f"activations with int8 weights")

    def relevant(self, name: str) -> bool:
        if name == "group_size":
            return self.granularity is Granularity.GROUP
        if name == "act_calibration":
            return self.activations
        if name == "act_percentile":
            return self.activations and self.act_calibration is Calibration.PERCENTILE
        return True


@dataclass(frozen=True)
class CastParams(TechniqueParams):
    technique: ClassVar[Technique] = Technique.CAST
    dtype: CastDtype = _opt(CastDtype.FLOAT16, "the 16-bit float type")


@dataclass(frozen=True)
class PalettizeParams(TechniqueParams):
    """k-means look-up-table weights: ``2**bits`` centroids per LUT."""
    technique: ClassVar[Technique] = Technique.PALETTIZE
    bits: int = _num(4, 1, 8, help="index bits")
    channels_per_lut: int | None = _num(None, 1, help="output channels sharing one LUT (default: one LUT per tensor)")


@dataclass(frozen=True)
class PruneParams(TechniqueParams):
    """Unstructured magnitude pruning."""
    technique: ClassVar[Technique] = Technique.PRUNE
    sparsity: float = _num(0.5, 0, 1, hi_open=True, help="fraction of weights set to zero")


@dataclass(frozen=True)
class PruneChannelsParams(TechniqueParams):
    """Structured channel pruning (really removes output channels and repairs the next layers)."""
    technique: ClassVar[Technique] = Technique.PRUNE_CHANNELS
    structural: ClassVar[bool] = True
    amount: float = _num(0.25, 0, 1, lo_open=True, hi_open=True, help="fraction of the output channels to remove")
    norm: Norm = _opt(Norm.L1, "channel importance: L1 or L2 norm of its weights")


PARAMS: dict[Technique, type[TechniqueParams]] = {
    c.technique: c for c in (QuantizeParams, CastParams, PalettizeParams, PruneParams, PruneChannelsParams)}
TECHNIQUES = tuple(str(t) for t in Technique)
STRUCTURAL = frozenset(str(t) for t, c in PARAMS.items() if c.structural)
CALIBRATIONS = tuple(str(c) for c in Calibration)


def _expect(hint: Any) -> tuple[type, bool]:
    """(value type, optional) from a field's annotation."""
    args = typing.get_args(hint)
    if args:
        real = [a for a in args if a is not type(None)]
        return real[0], type(None) in args
    return hint, False


def _field(technique: str, name: str) -> dataclasses.Field[Any]:
    return next(f for f in dataclasses.fields(PARAMS[Technique(technique)]) if f.name == name)  # type: ignore[arg-type]


def limits(technique: str, name: str) -> Limits:
    """The valid interval of a numeric parameter (for sliders and spin boxes)."""
    return _field(technique, name).metadata["limits"]


def default(technique: str, name: str) -> Any:
    """A parameter's default value."""
    return _field(technique, name).default


def parse_params(technique: str, raw: Mapping[str, Any] | TechniqueParams) -> TechniqueParams:
    """Validate a plan's ``params`` object into the technique's typed class. Raises ValueError
    naming the field (``'params.bits' is 9; it must be an integer from 2 to 8``)."""
    try:
        cls = PARAMS[Technique(technique)]
    except ValueError as exc:
        raise ValueError(f"field 'technique' is {technique!r}; choose one of {', '.join(TECHNIQUES)}") from exc
    if isinstance(raw, TechniqueParams):
        if not isinstance(raw, cls):
            raise ValueError(f"{type(raw).__name__} given for technique {technique!r}")
        raw.check()
        return raw
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        f = fields.get(key)
        if f is None:
            raise ValueError(f"field 'params.{key}' is not a {technique} parameter ({', '.join(fields)})")
        values[key] = _coerce(key, value, hints[key], f.metadata)
    params = cls(**values)
    params.check()
    return params


def _coerce(key: str, value: Any, hint: Any, meta: Mapping[str, Any]) -> Any:
    typ, optional = _expect(hint)
    if value is None and optional:
        return None
    bad = f"field 'params.{key}' is {value!r}; it must be "
    if isinstance(typ, type) and issubclass(typ, StrEnum):
        try:
            return typ(value)
        except ValueError as exc:
            raise ValueError(bad + " or ".join(str(m) for m in typ)) from exc
    if typ is bool:
        if not isinstance(value, bool):
            raise ValueError(bad + "true or false")
        return value
    lim: Limits = meta["limits"]
    integer = typ is int
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or isinstance(value, float) and not math.isfinite(value) or value not in lim:
        raise ValueError(bad + lim.text(integer))
    return int(value) if integer else float(value)
