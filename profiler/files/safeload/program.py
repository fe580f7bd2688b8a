"""The program JSON of a ``.pt2``, checked against a strict schema and rewritten into a form that runs
nothing: what :func:`sanitize` returns is all torch's deserializer is given.

The schema is the running torch's own (``torch._export.serde.schema``: the dataclasses its serializer
writes), walked field by field: an object may carry only the fields its class declares (plus the few
that older releases wrote, converted), a union exactly one known member, every value the declared
type. Then every string that could reach code is checked where it stands:

* node targets: ``torch.ops.<namespace>.<op>.<overload>`` of an allowed namespace that exists in this
  torch (looked up on ``torch.ops``), or one of the symbolic-shape helpers export emits;
* names that reach generated code (nodes, arguments, parameters, buffers, constants, forward
  arguments, module paths): identifiers, dotted for module paths;
* symbolic shapes and range constraints: parsed by :mod:`.exprs` and replaced by their printout;
* pytree specs: builtin containers only, re-serialised from their parsed form (no enum or factory
  imports); custom and script objects: refused; input guards: dropped (never executed);
* node metadata: the stack trace and module stack LayerScope reads, checked; provenance and user
  annotations dropped; anything else refused.

JSON string escapes are decoded by the parser before any check (``\\u005f`` is ``_``), and the checked
objects themselves are handed on, so what was checked is what is built.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from enum import IntEnum
from typing import Any

import torch

from .strings import DROPPED_META, MODULE_PATH, VERSION, ProgramError, check_target, checked_expr, checked_metadata, checked_text, checked_treespec, ident

__all__ = ["ProgramError", "sanitize", "check_target", "ident", "schema_types"]

_MAX_LIST = 5_000_000

_DEVICES = frozenset({"cpu", "cuda", "meta", "mps", "xpu", "hpu", "mtia", "privateuseone"})
_DIALECTS = frozenset({"", "ATEN", "TRAINING"})
_LEGACY_FIELDS = {("ExportedProgram", "dialect")}  # schema 5.x: converted to ``verifiers``


@functools.cache
def schema_types() -> Any:
    from torch._export.serde import schema

    return schema


@functools.cache
def _fields(cls: Any) -> dict[str, Any]:
    schema = schema_types()
    hints = typing.get_type_hints(cls, globalns=vars(schema), include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@functools.cache
def _required(cls: Any) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls)
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if isinstance(tp, str):
        tp = getattr(schema_types(), tp)
    elif isinstance(tp, typing.ForwardRef):
        tp = getattr(schema_types(), tp.__forward_arg__)
    return tp


# --------------------------------------------------------------------------- the schema walk
_NAME_FIELDS = {  # (class, field) -> dotted?
    ("TensorArgument", "name"): False, ("TokenArgument", "name"): False, ("GraphArgument", "name"): False,
    ("SymIntArgument", "as_name"): False, ("SymFloatArgument", "as_name"): False,
    ("SymBoolArgument", "as_name"): False, ("NamedArgument", "name"): False, ("Node", "name"): False,
    ("InputToConstantInputSpec", "name"): False, ("GradientToUserInputSpec", "user_input_name"): False,
    ("UserInputMutationSpec", "user_input_name"): False,
    ("InputToParameterSpec", "parameter_name"): True, ("InputToBufferSpec", "buffer_name"): True,
    ("InputToTensorConstantSpec", "tensor_constant_name"): True, ("BufferMutationSpec", "buffer_name"): True,
    ("ParameterMutationSpec", "parameter_name"): True, ("GradientToParameterSpec", "parameter_name"): True,
}
_NAME_KEYS = {("Graph", "tensor_values"), ("Graph", "sym_int_values"), ("Graph", "sym_bool_values"),
              ("Graph", "sym_float_values"), ("Argument", "as_string_to_argument"), ("ExportedProgram", "opset_version")}
_REFUSED = {"CustomObjArgument": "holds a custom (TorchScript or opaque) object, which is unpickled as code",
            "InputToCustomObjSpec": "takes a custom (TorchScript or opaque) object as input, which is unpickled as code"}


@functools.cache
def _kind(tp: Any) -> tuple[str, Any, Any]:
    """(kind, the type itself, its item type or enum values), worked out once per schema type."""
    tp = _strip(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(tp)) != 2:
            raise TypeError(f"an unsupported schema type {tp}")
        return "optional", tp, args[0]
    if origin is list:
        return "list", tp, typing.get_args(tp)[0]
    if origin is dict:
        return "dict", tp, typing.get_args(tp)[1]
    if isinstance(tp, type) and issubclass(tp, IntEnum):
        return "enum", tp, frozenset(m.value for m in tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "record", tp, None
    return "plain", tp, None


def _scalar(kind: str, tp: Any, item: Any, data: Any, where: str) -> Any:
    """An enum member, a boolean, a 64-bit integer or a float (JSON's Infinity and NaN included), exactly."""
    if kind == "enum":
        if type(data) is not int or data not in item:
            raise ProgramError(where, f"{data!r} is not a {tp.__name__}", unsafe=False)
        return data
    if tp is bool:
        if type(data) is not bool:
            raise ProgramError(where, f"{data!r} is not a boolean", unsafe=False)
        return data
    if tp is int:
        if type(data) is not int or abs(data) > 1 << 64:
            raise ProgramError(where, f"{str(data)[:40]!r} is not a 64-bit integer", unsafe=False)
        return data
    if tp is float:
        if data in ("Infinity", "-Infinity", "NaN") or type(data) in (int, float):
            return float(data)
        raise ProgramError(where, f"{str(data)[:40]!r} is not a number", unsafe=False)
    raise ProgramError(where, f"an unsupported schema type {tp}", unsafe=False)


class _Walker:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def value(self, tp: Any, data: Any, where: str, owner: str = "", field: str = "") -> Any:
        kind, tp, item = _kind(tp)
        if kind == "optional":
            return None if data is None else self.value(item, data, where, owner, field)
        if kind == "list":
            return self.list_value(item, data, where, owner, field)
        if kind == "dict":
            return self.dict_value(item, data, where, owner, field)
        if kind == "record":
            return self.record(tp, data, where)
        if tp is str:
            return self.string(data, where, owner, field)
        return _scalar(kind, tp, item, data, where)

    def list_value(self, item: Any, data: Any, where: str, owner: str, field: str) -> list:
        if not isinstance(data, list) or len(data) > _MAX_LIST:
            raise ProgramError(where, f"a {type(data).__name__} where a list was expected", unsafe=False)
        if (owner, field) == ("ModuleCallSignature", "forward_arg_names"):
            return [ident(v, f"{where}[{i}]") for i, v in enumerate(data)]
        if (owner, field) == ("ExportedProgram", "guards_code"):
            return []  # input guards are code: never executed here (LayerScope checks input shapes itself)
        if (owner, field) == ("ExportedProgram", "verifiers"):
            if not all(isinstance(v, str) and v in _DIALECTS for v in data):
                raise ProgramError(where, f"a dialect {data!r} LayerScope does not open", unsafe=False)
            return list(data)
        if (owner, field) == ("Argument", "as_strings"):
            return [checked_text(v, f"{where}[{i}]", 256) for i, v in enumerate(data)]
        return [self.value(item, v, f"{where}[{i}]") for i, v in enumerate(data)]

    def dict_value(self, item: Any, data: Any, where: str, owner: str, field: str) -> dict:
        if not isinstance(data, dict):
            raise ProgramError(where, f"a {type(data).__name__} where an object was expected", unsafe=False)
        if (owner, field) == ("Node", "metadata"):
            return checked_metadata(data, where)
        if (owner, field) == ("GraphModule", "metadata"):
            unknown = set(data) - DROPPED_META
            if unknown:
                raise ProgramError(where, f"program metadata {sorted(unknown)[:3]} LayerScope does not know", unsafe=False)
            return {}
        if (owner, field) == ("Graph", "custom_obj_values") and data:
            raise ProgramError(where, _REFUSED["CustomObjArgument"])
        out = {}
        for k, v in data.items():
            at = f"{where}[{str(k)[:40]!r}]"
            if (owner, field) in _NAME_KEYS:
                key = ident(k, at)
            elif (owner, field) == ("ExportedProgram", "range_constraints"):
                key = checked_expr(k, at)
            elif (owner, field) == ("GraphModule", "treespec_namedtuple_fields"):
                key = ident(k, at, dotted=True)
            else:
                key = checked_text(k, at, 256)
            out[key] = self.value(item, v, at)
        return out

    def string(self, data: Any, where: str, owner: str, field: str) -> str:
        key = (owner, field)
        if key in _NAME_FIELDS:
            return ident(data, where, dotted=_NAME_FIELDS[key])
        if key in (("Node", "target"), ("Argument", "as_operator")):
            return check_target(data, where)
        if key in (("SymExpr", "expr_str"),):
            return checked_expr(data, where)
        if key == ("ModuleCallSignature", "in_spec") or key == ("ModuleCallSignature", "out_spec"):
            return checked_treespec(data, where, outputs=field == "out_spec", notes=self.notes)
        if key == ("ModuleCallEntry", "fqn"):
            if not isinstance(data, str) or not MODULE_PATH.fullmatch(data):
                raise ProgramError(where, f"the module path {str(data)[:80]!r} is not a dotted Python name")
            return data
        if key == ("Device", "type"):
            if not (isinstance(data, str) and data in _DEVICES):
                raise ProgramError(where, f"the device {str(data)[:40]!r}", unsafe=False)
            return data
        if key == ("ExportedProgram", "torch_version"):
            if not isinstance(data, str) or not VERSION.fullmatch(data):
                raise ProgramError(where, f"the torch version {str(data)[:40]!r}", unsafe=False)
            return data
        return checked_text(data, where, 256)

    def record(self, cls: Any, data: Any, where: str) -> Any:
        from torch._export.serde.union import _Union

        name = cls.__name__
        if name in _REFUSED:
            raise ProgramError(where, _REFUSED[name])
        if not isinstance(data, dict):
            raise ProgramError(where, f"a {type(data).__name__} where a {name} object was expected", unsafe=False)
        fields = _fields(cls)
        if issubclass(cls, _Union):
            if len(data) != 1:
                raise ProgramError(where, f"a {name} with {len(data)} members (a union has one)", unsafe=False)
            ((member, value),) = data.items()
            if member not in fields:
                raise ProgramError(where, f"{name} has no member {str(member)[:60]!r}")
            if (name, member) in (("InputSpec", "custom_obj"), ("Argument", "as_custom_obj")):
                raise ProgramError(where, _REFUSED["InputToCustomObjSpec"])
            return cls.create(**{member: self.value(fields[member], value, f"{where}.{member}", name, member)})
        unknown = [k for k in data if k not in fields and (name, k) not in _LEGACY_FIELDS]
        if unknown:
            raise ProgramError(where, f"a {name} with the field {str(unknown[0])[:60]!r}, which the schema of torch "
                                      f"{torch.__version__} does not have")
        missing = sorted(_required(cls) - set(data))
        if missing:
            raise ProgramError(where, f"a {name} without {', '.join(missing)}", unsafe=False)
        return cls(**{k: self.value(fields[k], v, f"{where}.{k}", name, k) for k, v in data.items() if k in fields})


def sanitize(program: Any) -> tuple[Any, int, list[str]]:
    """(the program as the schema's own dataclasses, built from the checked parts only: all torch's deserializer
    is given; its schema major version; notes for the user). Raises ``ProgramError`` naming the first part
    outside the schema or the allowlists."""
    if not isinstance(program, dict):
        raise ProgramError("<program>", "not a JSON object", unsafe=False)
    walker = _Walker()
    schema = schema_types()
    clean = walker.record(schema.ExportedProgram, program, "<program>")
    if "dialect" in program:  # schema 5.x: the dialect became a list of verifiers
        dialect = program["dialect"]
        if not (isinstance(dialect, str) and dialect in _DIALECTS):
            raise ProgramError("<program>.dialect", f"the dialect {str(dialect)[:40]!r}", unsafe=False)
        if "verifiers" not in program:
            clean.verifiers = [dialect]
    major = int(clean.schema_version.major)
    return clean, major, list(dict.fromkeys(walker.notes))
