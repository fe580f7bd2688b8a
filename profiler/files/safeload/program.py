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
import json
import keyword
import math
import operator
import re
import types
import typing
from enum import IntEnum
from typing import Any

import torch

from . import exprs

__all__ = ["ProgramError", "sanitize", "check_target", "ident", "schema_types"]

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DOTTED = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")  # module paths: ``0.weight`` is a Sequential's first layer
_MODULE_PATH = re.compile(r"([A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*)?(@[0-9]{1,6})?")
_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|<locals>))*")
_VERSION = re.compile(r"[0-9A-Za-z.+<=_-]{1,48}")
_MAX_NAME = 512
_MAX_STRING = 4096
_MAX_LIST = 5_000_000

NAMESPACES = frozenset({"aten", "prims", "quantized_decomposed", "quantized", "torchao", "higher_order"})
HIGHER_ORDER = frozenset({"cond", "while_loop", "map_impl", "scan", "associative_scan", "wrap_with_set_grad_enabled",
                          "wrap_with_autocast", "auto_functionalized", "auto_functionalized_v2", "with_effects",
                          "invoke_subgraph", "flex_attention", "out_dtype"})
# the symbolic-shape helpers torch's serializer writes as plain paths (serialize._SYM_OPS and friends)
SYM_TARGETS: dict[str, Any] = {
    **{f"_operator.{n}": getattr(operator, n) for n in (
        "add", "sub", "mul", "floordiv", "truediv", "mod", "pow", "neg", "pos", "abs", "eq", "ne", "lt", "le", "gt",
        "ge", "and_", "or_", "not_", "getitem", "lshift", "rshift")},
    **{f"math.{n}": getattr(math, n) for n in ("ceil", "floor", "trunc", "sqrt")},
    **{f"torch.{n}": getattr(torch, n) for n in ("sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite",
                                                 "sym_sqrt", "_sym_sqrt", "sym_sum", "sym_float", "_check",
                                                 "_check_is_size", "_assert")
       if hasattr(torch, n)},
}
_DEVICES = frozenset({"cpu", "cuda", "meta", "mps", "xpu", "hpu", "mtia", "privateuseone"})
_DIALECTS = frozenset({"", "ATEN", "TRAINING"})
_TREESPEC_TYPES = frozenset({"builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict",
                             "builtins.NoneType", "torch.fx.immutable_collections.immutable_list",
                             "torch.fx.immutable_collections.immutable_dict"})
_DROPPED_META = frozenset({"custom", "from_node"})  # provenance and user annotations: not needed, not read
_LEGACY_FIELDS = {("ExportedProgram", "dialect")}  # schema 5.x: converted to ``verifiers``


class ProgramError(ValueError):
    """The program is outside what LayerScope reads. ``where`` is the JSON path."""

    def __init__(self, where: str, what: str, unsafe: bool = True) -> None:
        where = where.removeprefix("<program>.")
        super().__init__(f"{where}: {what}")
        self.where, self.what, self.unsafe = where, what, unsafe


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


def ident(value: object, where: str, dotted: bool = False) -> str:
    pattern = DOTTED if dotted else IDENT
    if not isinstance(value, str) or len(value) > _MAX_NAME or not pattern.fullmatch(value) or keyword.iskeyword(value):
        kind = "a dotted module path" if dotted else "a Python identifier"
        raise ProgramError(where, f"the name {str(value)[:80]!r} is not {kind}, so it could change the code torch generates")
    return value


def _text(value: object, where: str, limit: int = _MAX_STRING, newlines: bool = False) -> str:
    """Plain text: no control characters (``\\n`` and ``\\t`` where ``newlines``) and no line or paragraph
    separators, which Python's tokenizer or a terminal could read as more than text."""
    if not isinstance(value, str):
        raise ProgramError(where, f"a {type(value).__name__} where text was expected", unsafe=False)
    if len(value) > limit:
        raise ProgramError(where, f"a text of {len(value):,} characters (at most {limit:,})", unsafe=False)
    allowed = "\n\t" if newlines else ""
    for ch in value:
        if (ch < " " and ch not in allowed) or ch == "\x7f" or "\x80" <= ch <= "\x9f" or ch in "\u2028\u2029":
            raise ProgramError(where, f"the control character U+{ord(ch):04X} in {value[:60]!r}")
    return value


def check_target(text: object, where: str) -> str:
    """``text`` if it names an operator this loader allows (see the module docstring)."""
    if not isinstance(text, str):
        raise ProgramError(where, "a node target that is not text")
    if text in SYM_TARGETS:
        return text
    parts = text.split(".")
    if len(parts) not in (4, 5) or parts[:2] != ["torch", "ops"] or not all(IDENT.fullmatch(p) for p in parts[2:]):
        raise ProgramError(where, f"calls {text[:100]!r}, which is not torch.ops.<namespace>.<op>.<overload>")
    ns, op = parts[2], parts[3]
    if ns not in NAMESPACES:
        raise ProgramError(where, f"calls {text[:100]!r}: the namespace {ns!r} is not one LayerScope opens "
                                  f"({', '.join(sorted(NAMESPACES))})")
    if ns == "higher_order":
        if len(parts) != 4 or op not in HIGHER_ORDER:
            raise ProgramError(where, f"calls the higher-order operator {text[:100]!r}, which LayerScope does not open")
        return text
    if len(parts) != 5:
        raise ProgramError(where, f"calls {text[:100]!r} without an overload")
    if not _op_exists(ns, op, parts[4]):
        raise ProgramError(where, f"calls {text[:100]!r}, which is not an operator of this torch {torch.__version__}",
                           unsafe=False)
    return text


@functools.cache
def _op_exists(ns: str, op: str, overload: str) -> bool:
    try:
        packet = getattr(getattr(torch.ops, ns), op)
        return isinstance(getattr(packet, overload), torch._ops.OpOverload)
    except (AttributeError, RuntimeError):
        return False


def _expr(value: object, where: str) -> str:
    try:
        return exprs.canonical(value)
    except exprs.ExprError as exc:
        raise ProgramError(where, f"a symbolic shape with {exc} ({str(value)[:80]!r})") from exc


# --------------------------------------------------------------------------- pytree specs
def _treespec(text: object, where: str, outputs: bool = False, notes: list[str] | None = None) -> str:
    """The spec re-serialised from its checked parts. In an output spec, a class this process has not
    registered (a Hugging Face ``ModelOutput``) whose context is its field names is rebuilt as a dict of
    those fields: the same tensors under the same names, without importing the class's library."""
    from ..safeio import parse_json

    if not isinstance(text, str):
        raise ProgramError(where, "a pytree spec that is not text")
    try:
        data = parse_json(text, where, ValueError, max_bytes=1 << 22, max_depth=400)
    except ValueError as exc:
        raise ProgramError(where, f"a pytree spec that is not JSON ({exc})", unsafe=False) from exc
    if not (isinstance(data, list) and len(data) == 2 and data[0] == 1):
        raise ProgramError(where, "a pytree spec of an unknown protocol")
    count = [0]

    def node(spec: object, depth: int) -> dict[str, Any]:
        count[0] += 1
        if depth > 100 or count[0] > 100_000:
            raise ProgramError(where, "a pytree spec nested more than 100 deep or with more than 100,000 nodes")
        if not isinstance(spec, dict) or set(spec) != {"type", "context", "children_spec"} \
                or not isinstance(spec["children_spec"], list):
            raise ProgramError(where, "a pytree node with other fields than type, context and children_spec")
        kind, context = spec["type"], spec["context"]
        children = [node(c, depth + 1) for c in spec["children_spec"]]
        if kind is None:
            if context is not None or children:
                raise ProgramError(where, "a pytree leaf with a context or children")
            return {"type": None, "context": None, "children_spec": []}
        keys: Any = None
        if isinstance(context, str):
            try:
                keys = json.loads(context)
            except (ValueError, RecursionError) as exc:
                raise ProgramError(where, "a pytree context that is not JSON") from exc
        if not (kind is None or isinstance(kind, str)):
            raise ProgramError(where, "a pytree node type that is not text")
        if kind not in _TREESPEC_TYPES:
            if not (outputs and isinstance(kind, str) and DOTTED.fullmatch(kind) and isinstance(keys, list)):
                raise ProgramError(where, f"a pytree of type {str(kind)[:80]!r}: LayerScope rebuilds only tuples, "
                                          f"lists, dicts and None here")
            if notes is not None:
                notes.append(f"its outputs of type {kind} are given as a dict of the same fields")
            kind = "builtins.dict"
        if "dict" in kind.lower():
            if not isinstance(keys, list) or len(keys) != len(children) or not all(
                    (isinstance(k, str) and IDENT.fullmatch(k) and len(k) <= _MAX_NAME)
                    or (type(k) is int and abs(k) < 1 << 31) for k in keys):
                raise ProgramError(where, f"a pytree dict whose keys are not identifiers: {str(context)[:80]!r}")
        elif keys is not None:
            raise ProgramError(where, f"a pytree {kind} with a context {str(context)[:80]!r}")
        return {"type": kind, "context": json.dumps(keys), "children_spec": children}

    return json.dumps([1, node(data[1], 0)])


# --------------------------------------------------------------------------- node metadata
def _split_top(text: str, where: str) -> list[str]:
    """torch's split of a ``key,path,class`` module-stack item: commas outside brackets."""
    out, start, depth = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    if len(out) != 3:
        raise ProgramError(where, f"a module-stack entry {text[:80]!r} that is not key,path,class", unsafe=False)
    return out


def _metadata(meta: object, where: str) -> dict[str, str]:
    if not isinstance(meta, dict):
        raise ProgramError(where, "node metadata that is not an object", unsafe=False)
    out: dict[str, str] = {}
    for key, value in meta.items():
        at = f"{where}.{key}"
        if key in _DROPPED_META:
            continue
        text = _text(value, at, limit=1 << 16, newlines=key == "stack_trace")
        if key == "stack_trace":
            out[key] = text
        elif key == "nn_module_stack":
            for item in text.split(";"):
                k, path, cls = _split_top(item, at)
                if not _MODULE_PATH.fullmatch(k) or not _MODULE_PATH.fullmatch(path) or not _CLASS_NAME.fullmatch(cls):
                    raise ProgramError(at, f"a module path or class {item[:100]!r} that is not a dotted Python name")
            out[key] = text
        elif key == "source_fn_stack":
            for item in text.split(";"):
                name, _, target = item.partition(",")
                if not IDENT.fullmatch(name) or not DOTTED.fullmatch(target) or "__" in target.replace("_operator", ""):
                    raise ProgramError(at, f"a source function {item[:100]!r} that is not a name and a dotted path")
            out[key] = text
        elif key == "torch_fn":
            out[key] = text
        else:
            raise ProgramError(at, f"node metadata {key[:60]!r}, which LayerScope does not know", unsafe=False)
    return out


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


class _Walker:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def value(self, tp: Any, data: Any, where: str, owner: str = "", field: str = "") -> Any:
        kind, tp, item = _kind(tp)
        if kind == "optional":
            return None if data is None else self.value(item, data, where, owner, field)
        if kind == "list":
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
                return [_text(v, f"{where}[{i}]", 256) for i, v in enumerate(data)]
            return [self.value(item, v, f"{where}[{i}]") for i, v in enumerate(data)]
        if kind == "dict":
            if not isinstance(data, dict):
                raise ProgramError(where, f"a {type(data).__name__} where an object was expected", unsafe=False)
            if (owner, field) == ("Node", "metadata"):
                return _metadata(data, where)
            if (owner, field) == ("GraphModule", "metadata"):
                unknown = set(data) - _DROPPED_META
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
                    key = _expr(k, at)
                elif (owner, field) == ("GraphModule", "treespec_namedtuple_fields"):
                    key = ident(k, at, dotted=True)
                else:
                    key = _text(k, at, 256)
                out[key] = self.value(item, v, at)
            return out
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
        if tp is str:
            return self.string(data, where, owner, field)
        if kind == "record":
            return self.record(tp, data, where)
        raise ProgramError(where, f"an unsupported schema type {tp}", unsafe=False)

    def string(self, data: Any, where: str, owner: str, field: str) -> str:
        key = (owner, field)
        if key in _NAME_FIELDS:
            return ident(data, where, dotted=_NAME_FIELDS[key])
        if key in (("Node", "target"), ("Argument", "as_operator")):
            return check_target(data, where)
        if key in (("SymExpr", "expr_str"),):
            return _expr(data, where)
        if key == ("ModuleCallSignature", "in_spec") or key == ("ModuleCallSignature", "out_spec"):
            return _treespec(data, where, outputs=field == "out_spec", notes=self.notes)
        if key == ("ModuleCallEntry", "fqn"):
            if not isinstance(data, str) or not _MODULE_PATH.fullmatch(data):
                raise ProgramError(where, f"the module path {str(data)[:80]!r} is not a dotted Python name")
            return data
        if key == ("Device", "type"):
            if not (isinstance(data, str) and data in _DEVICES):
                raise ProgramError(where, f"the device {str(data)[:40]!r}", unsafe=False)
            return data
        if key == ("ExportedProgram", "torch_version"):
            if not isinstance(data, str) or not _VERSION.fullmatch(data):
                raise ProgramError(where, f"the torch version {str(data)[:40]!r}", unsafe=False)
            return data
        return _text(data, where, 256)

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
