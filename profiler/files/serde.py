"""JSON form of the core's frozen dataclasses: one generic converter, driven by type hints.

``to_jsonable`` turns a dataclass tree into plain JSON types; ``from_jsonable`` rebuilds it from
the field type hints (nested dataclasses, tuples, dicts, ``X | None``, StrEnum). Round trips are
exact: ``from_jsonable(T, to_jsonable(x)) == x``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["to_jsonable", "from_jsonable"]


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_jsonable(tp: Any, data: Any) -> Any:
    """``data`` (parsed JSON) as type ``tp``: unions (the first member that accepts it), dataclasses (every field
    without a default present), tuples, lists, dicts, enums and scalars, each checked exactly."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _union(tp, args, data)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass(tp, data)
    if origin in (tuple, list) and not isinstance(data, list):
        raise TypeError(f"expected a list, got {type(data).__name__}")
    if origin is dict and not isinstance(data, dict):
        raise TypeError(f"expected an object, got {type(data).__name__}")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v) for v in data)
        return tuple(from_jsonable(a, v) for a, v in zip(args, data, strict=True))
    if origin is list:
        return [from_jsonable(args[0], v) for v in data]
    if origin is dict:
        return {from_jsonable(args[0], k): from_jsonable(args[1], v) for k, v in data.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    return _scalar(tp, data)


def _union(tp: Any, args: tuple, data: Any) -> Any:
    if data is None and type(None) in args:
        return None
    non_none = [a for a in args if a is not type(None)]
    if len(non_none) == 1:
        return from_jsonable(non_none[0], data)
    for a in non_none:  # first that accepts it
        try:
            return from_jsonable(a, data)
        except (TypeError, ValueError, KeyError):
            continue
    raise ValueError(f"{data!r} fits none of {tp}")


def _dataclass(tp: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"expected an object for {tp.__name__}, got {type(data).__name__}")
    hints = _hints(tp)
    kwargs = {}
    for f in dataclasses.fields(tp):
        if f.name in data:
            kwargs[f.name] = from_jsonable(hints[f.name], data[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise KeyError(f"{tp.__name__}.{f.name} is missing")
    return tp(**kwargs)


def _scalar(tp: Any, data: Any) -> Any:
    if tp is float:
        if data is None:
            return math.nan
        if isinstance(data, str) and data in ("inf", "-inf", "nan"):
            return float(data)
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise TypeError(f"expected a number, got {data!r}")
        try:
            return float(data)
        except OverflowError as exc:
            raise ValueError(f"number {str(data)[:20]}… is too large") from exc
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise TypeError(f"expected an integer, got {data!r}")
        return data
    if tp is str:
        if not isinstance(data, str):
            raise TypeError(f"expected a string, got {data!r}")
        return data
    if tp is bool:
        if not isinstance(data, bool):
            raise TypeError(f"expected true or false, got {data!r}")
        return data
    if tp is Any:
        return data
    raise TypeError(f"cannot read {tp!r}")
