"""What each string of a ``.pt2`` program may be where it stands: names that reach generated code
(identifiers, dotted module paths), node targets (an allowed ``torch.ops`` namespace, or a symbolic-shape
helper), symbolic expressions (:mod:`.exprs`), pytree specs (builtin containers only), node metadata.
:mod:`.program` walks the schema and calls these on every string it meets."""

from __future__ import annotations

import functools
import json
import keyword
import math
import operator
import re
from typing import Any

import torch

from . import exprs

__all__ = ["ProgramError", "ident", "check_target", "checked_text", "checked_expr", "checked_treespec", "checked_metadata",
           "IDENT", "DOTTED", "MODULE_PATH", "VERSION", "DROPPED_META", "NAMESPACES", "SYM_TARGETS"]


IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DOTTED = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")  # module paths: ``0.weight`` is a Sequential's first layer
MODULE_PATH = re.compile(r"([A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*)?(@[0-9]{1,6})?")
_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|<locals>))*")
VERSION = re.compile(r"[0-9A-Za-z.+<=_-]{1,48}")
_MAX_NAME = 512
_MAX_STRING = 4096
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
_TREESPEC_TYPES = frozenset({"builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict",
                             "builtins.NoneType", "torch.fx.immutable_collections.immutable_list",
                             "torch.fx.immutable_collections.immutable_dict"})
DROPPED_META = frozenset({"custom", "from_node"})  # provenance and user annotations: not needed, not read


class ProgramError(ValueError):
    """The program is outside what LayerScope reads. ``where`` is the JSON path."""

    def __init__(self, where: str, what: str, unsafe: bool = True) -> None:
        where = where.removeprefix("<program>.")
        super().__init__(f"{where}: {what}")
        self.where, self.what, self.unsafe = where, what, unsafe


def ident(value: object, where: str, dotted: bool = False) -> str:
    pattern = DOTTED if dotted else IDENT
    if not isinstance(value, str) or len(value) > _MAX_NAME or not pattern.fullmatch(value) or keyword.iskeyword(value):
        kind = "a dotted module path" if dotted else "a Python identifier"
        raise ProgramError(where, f"the name {str(value)[:80]!r} is not {kind}, so it could change the code torch generates")
    return value


def checked_text(value: object, where: str, limit: int = _MAX_STRING, newlines: bool = False) -> str:
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


def checked_expr(value: object, where: str) -> str:
    try:
        return exprs.canonical(value)
    except exprs.ExprError as exc:
        raise ProgramError(where, f"a symbolic shape with {exc} ({str(value)[:80]!r})") from exc


# --------------------------------------------------------------------------- pytree specs
def checked_treespec(text: object, where: str, outputs: bool = False, notes: list[str] | None = None) -> str:
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


def checked_metadata(meta: object, where: str) -> dict[str, str]:
    if not isinstance(meta, dict):
        raise ProgramError(where, "node metadata that is not an object", unsafe=False)
    out: dict[str, str] = {}
    for key, value in meta.items():
        at = f"{where}.{key}"
        if key in DROPPED_META:
            continue
        text = checked_text(value, at, limit=1 << 16, newlines=key == "stack_trace")
        if key == "stack_trace":
            out[key] = text
        elif key == "nn_module_stack":
            for item in text.split(";"):
                k, path, cls = _split_top(item, at)
                if not MODULE_PATH.fullmatch(k) or not MODULE_PATH.fullmatch(path) or not _CLASS_NAME.fullmatch(cls):
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
