"""Open a saved ``torch.export`` program (``.pt2``) without running code carried by the file.

``torch.export.load`` trusts its input: weights and example inputs may be pickles loaded with
``weights_only=False``; symbolic shapes are parsed with ``sympy.sympify`` (an ``eval``); the
program's input guards are ``exec``-ed when ``ep.module()`` is built; node targets resolve any
attribute path under ``torch`` (``torch.os.system``); a ``data/aotinductor/`` entry loads a
compiled shared library; a pytree spec may import any installed module. A file someone sent you
can therefore run code the moment it is opened (paper 6.2: practitioners pass models around).

LayerScope opens a ``.pt2`` in three layers, and refuses with ``UnsafeFileError`` (which names the
file, what it asked for and the opt-in flag) at the first violation:

1. **Scan** the archive before torch sees it: no compiled code, no custom (TorchScript/opaque)
   objects, no pytree imports; every symbolic expression and guard must parse to a small safe
   grammar (arithmetic, comparisons, ``Max``/``FloorDiv``-style functions, ``L['x'].size()[0]``);
   every node target must name a registered operator (``torch.ops.<ns>.<op>[.<overload>]``) or
   one of the symbolic-shape helpers export emits. Decompressed size is bounded.
2. **Guard** the load itself with a Python audit hook: an unpickler may import only the globals
   ``torch.load(weights_only=True)`` allows; starting processes, loading native libraries,
   opening sockets and writing files are refused while the file is being read.
3. **Verify** the loaded graphs: every ``call_function`` target is a registered operator, a
   higher-order operator or an allowed symbolic helper.

``trust=True`` (``--trust-file``) skips all three and calls ``torch.export.load`` plainly, with
torch's own warnings visible. ``file.py:factory`` sources are code by design and always run.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import functools
import io
import logging
import math
import operator
import os
import re
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ModelLoadError, UnsafeFileError, first_line

__all__ = ["load_exported_program", "scan_pt2", "TRUST_HINT"]

TRUST_HINT = ("LayerScope opens .pt2 files the way torch.load(weights_only=True) opens weights. If you trust where this "
              "file came from, pass --trust-file (in the app: tick 'Trust this file' in File → Open model).")

_MAX_ENTRIES = 200_000
_MAX_PROGRAM_JSON = 1 << 30
_MAX_EXPR_CHARS = 4_000
_MAX_INT_DIGITS = 30
_MAX_POW_EXPONENT = 64

# --------------------------------------------------------------------------- 1. scan
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TARGET_RE = re.compile(rf"^(torch\.ops\.{_NAME}\.{_NAME}(\.{_NAME})?|_operator\.{_NAME}|math\.{_NAME}|torch\.{_NAME}|#{_NAME}:[\w.:]+)$")
_SYMBOL_RE = re.compile(r"^[a-z]{1,4}[0-9]{1,9}$")  # s0, u12, zuf3: export's shape symbols
_SYMPY_NAMES = frozenset({
    "Max", "Min", "Abs", "floor", "ceiling", "sqrt", "Piecewise", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
    "Integer", "Rational", "Float", "Mul", "Add", "Pow", "Mod", "Symbol", "oo", "zoo", "nan", "pi", "E", "true", "false", "True",
    "False", "ITE", "Xor", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality",
})


def _sympy_function_names() -> frozenset[str]:
    try:
        from torch.utils._sympy import functions
        extra = set(getattr(functions, "__all__", ()))
        extra |= {n for n in dir(functions) if n.startswith(("OpaqueUnaryFn_", "BitwiseFn_"))}
    except ImportError:  # pragma: no cover - older torch
        extra = set()
    return _SYMPY_NAMES | {n for n in extra if "__" not in n}


_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd, ast.BitOr, ast.BitXor,
           ast.LShift, ast.RShift)
_UNARY = (ast.USub, ast.UAdd, ast.Not, ast.Invert)
_CMPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_MATH_FUNCS = frozenset({"floor", "ceil", "trunc", "sqrt", "log2", "isfinite", "inf"})


def _safe_ast(node: ast.AST, names: frozenset[str], guard: bool) -> str:
    """'' if ``node`` is in the safe grammar, else what broke it. ``guard`` adds the input paths
    of export's guards (``L['x'].size()[0]``) and ``math.floor``-style calls."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Expression):
            stack.append(n.body)
        elif isinstance(n, ast.BinOp) and isinstance(n.op, _BINOPS):
            if isinstance(n.op, ast.Pow):
                e = n.right.operand if isinstance(n.right, ast.UnaryOp) and isinstance(n.right.op, ast.USub) else n.right
                if not (isinstance(e, ast.Constant) and type(e.value) is int and abs(e.value) <= _MAX_POW_EXPONENT):
                    return "a power whose exponent is not a small integer"
            stack += [n.left, n.right]
        elif isinstance(n, ast.UnaryOp) and isinstance(n.op, _UNARY):
            stack.append(n.operand)
        elif isinstance(n, ast.BoolOp):
            stack += n.values
        elif isinstance(n, ast.Compare) and all(isinstance(o, _CMPS) for o in n.ops):
            stack += [n.left, *n.comparators]
        elif isinstance(n, ast.Constant):
            v = n.value
            if type(v) is int and len(str(abs(v))) > _MAX_INT_DIGITS:
                return "an integer with too many digits"
            if isinstance(v, str) and not guard:
                return "a string"
            if not isinstance(v, (int, float, bool, str)) or isinstance(v, complex):
                return f"a constant of type {type(v).__name__}"
        elif isinstance(n, ast.Name):
            if not (_SYMBOL_RE.match(n.id) or n.id in names or (guard and n.id in ("L", "inf"))):
                return f"the name {n.id!r}"
        elif isinstance(n, ast.Call):
            if len(n.args) > 16 or any(not k.arg or "__" in k.arg or not isinstance(k.value, ast.Constant)
                                       or type(k.value.value) not in (bool, int) for k in n.keywords):
                return "a call with many arguments or non-constant keywords"
            f = n.func
            if isinstance(f, ast.Name) and f.id == "Symbol":  # srepr form: Symbol('s0', positive=True, integer=True)
                if len(n.args) != 1 or not isinstance(n.args[0], ast.Constant) or not isinstance(n.args[0].value, str) \
                        or not _SYMBOL_RE.match(n.args[0].value):
                    return "a Symbol that is not a shape symbol"
            elif isinstance(f, ast.Name) and f.id in names:
                stack += n.args
            elif guard and isinstance(f, ast.Attribute) and f.attr in _GUARD_METHODS and len(n.args) <= 1:
                stack += [f.value, *n.args]
            elif guard and isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "math" \
                    and f.attr in _MATH_FUNCS:
                stack += n.args
            else:
                return f"the call {ast.unparse(f)}(…)"
        elif guard and isinstance(n, ast.Subscript):
            s = n.slice
            if not (isinstance(s, ast.Constant) and isinstance(s.value, (int, str))):
                return "a computed subscript"
            if isinstance(s.value, str) and ("__" in s.value or len(s.value) > 200):
                return "a suspicious key"
            stack.append(n.value)
        elif guard and isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "math" \
                and n.attr in _MATH_FUNCS:
            pass
        else:
            return f"a {type(n).__name__} expression"
    return ""


def check_expression(text: object, guard: bool = False) -> str:
    """'' if ``text`` is a symbolic-shape expression (``guard``: an input guard) that is safe to
    hand to sympy/exec; else why not."""
    if not isinstance(text, str):
        return "an expression that is not a string"
    if len(text) > _MAX_EXPR_CHARS:
        return f"an expression of {len(text)} characters"
    if "__" in text:
        return "a double-underscore name"
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "an expression that does not parse"
    return _safe_ast(tree, _NAMES, guard)


_NAMES = _sympy_function_names()


def _refuse(path: Path, what: str) -> UnsafeFileError:
    return UnsafeFileError(f"{path}: refused to load: it {what}, which would run code from the file. {TRUST_HINT}")


def _walk_program(data: Any, path: Path, entry: str) -> None:
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if key == "expr_str":
                why = check_expression(value)
                if why:
                    raise _refuse(path, f"holds a symbolic shape with {why} ({str(value)[:80]!r} in {entry})")
            elif key == "range_constraints" and isinstance(value, dict):
                for expr in value:
                    why = check_expression(expr)
                    if why:
                        raise _refuse(path, f"holds a range constraint with {why} ({str(expr)[:80]!r} in {entry})")
            elif key == "guards_code":
                for g in value if isinstance(value, list) else [value]:
                    why = check_expression(g, guard=True)
                    if why:
                        raise _refuse(path, f"holds an input guard with {why} ({str(g)[:80]!r} in {entry})")
            elif key == "target" and isinstance(value, str) and "inputs" in node and "outputs" in node:
                if not _TARGET_RE.match(value) or not _safe_target(_resolve_target(value)):
                    raise _refuse(path, f"calls {value[:80]!r}, which is not a registered operator ({entry})")
            if isinstance(value, (dict, list)):
                stack.append(value)


def scan_pt2(path: Path, max_bytes: int | None = None) -> None:
    """Check a .pt2 archive before torch reads it (see the module docstring, layer 1)."""
    from .format import fmt_bytes
    from .resources import available_memory_bytes
    from .safeio import MAX_JSON_DEPTH, parse_json

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not a readable torch.export program (.pt2): not a zip archive ({exc}).") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > _MAX_ENTRIES:
            raise ModelLoadError(f"{path} holds {len(infos):,} entries; a torch.export program has far fewer. Is it the right file?")
        total = sum(i.file_size for i in infos)
        limit = max_bytes if max_bytes is not None else available_memory_bytes()
        if limit and total > limit:
            raise ModelLoadError(f"{path} unpacks to {fmt_bytes(total)}, more than the {fmt_bytes(limit)} of memory available; "
                                 f"it cannot be loaded here.")
        names = [i.filename for i in infos]
        for name in names:
            inner = name.split("/", 1)[1] if "/" in name else name
            if inner.startswith("data/aotinductor/"):
                raise _refuse(path, f"carries compiled native code ({name}, an AOTInductor package)")
        for info in infos:
            name = info.filename
            inner = name.split("/", 1)[1] if "/" in name else name
            if inner.startswith("data/constants/") and inner.endswith("constants_config.json"):
                cfg = parse_json(zf.read(info), f"{path}:{name}", ModelLoadError)
                entries = cfg.get("config", {}) if isinstance(cfg, dict) else {}
                for fqn, meta in (entries.items() if isinstance(entries, dict) else []):
                    pname = meta.get("path_name", "") if isinstance(meta, dict) else ""
                    if isinstance(pname, str) and pname.startswith(("custom_obj_", "opaque_obj_")):
                        raise _refuse(path, f"holds a custom object constant {fqn!r} ({pname}) that is unpickled as code")
            elif inner.startswith("models/") and inner.endswith(".json"):
                if info.file_size > _MAX_PROGRAM_JSON:
                    raise ModelLoadError(f"{path}: {name} is {fmt_bytes(info.file_size)}; too large for a program description.")
                raw = zf.read(info)
                if b"default_factory_module" in raw or b"__enum__" in raw:
                    raise _refuse(path, f"describes its inputs with a pytree spec that imports a module by name ({name})")
                program = parse_json(raw, f"{path}:{name}", ModelLoadError, max_bytes=_MAX_PROGRAM_JSON,
                                     max_depth=4 * MAX_JSON_DEPTH)
                _walk_program(program, path, name)


# --------------------------------------------------------------------------- 2. guard
@dataclass
class _Guard:
    allowed_globals: frozenset[str]
    scratch: str  # writes are allowed only under the temporary folder (torch's own scratch files)
    blocked: list[str] = field(default_factory=list)


_ACTIVE: contextvars.ContextVar[_Guard | None] = contextvars.ContextVar("layerscope_safeload", default=None)
_HOOK_LOCK = threading.Lock()
_HOOK_INSTALLED = False
_EXEC_EVENTS = frozenset({
    "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn",
    "os.startfile", "webbrowser.open", "ctypes.dlopen", "socket.connect", "socket.bind", "socket.sendto",
})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _audit(event: str, args: tuple) -> None:
    guard = _ACTIVE.get()
    if guard is None:
        return
    what = ""
    if event == "pickle.find_class":
        mod, name = args[0], args[1]
        mod = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(mod, mod)
        if f"{mod}.{name}" not in guard.allowed_globals:
            what = f"asks the unpickler for {mod}.{name}"
    elif event in _EXEC_EVENTS:
        what = f"tried {event} while loading"
    elif event == "open" and len(args) >= 3:
        mode, flags = args[1], args[2]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & _WRITE_FLAGS)
        target = os.path.abspath(os.fsdecode(args[0])) if isinstance(args[0], (str, bytes, os.PathLike)) else ""
        if writes and target and not target.startswith(guard.scratch):
            what = f"tried to write {target:.120} while loading"
    elif event == "import" and args and isinstance(args[0], str) and "__main__" in args[0]:
        what = f"tried to import {args[0]} while loading"
    if what:
        guard.blocked.append(what)
        raise UnsafeFileError(what)


def _install_hook() -> None:
    global _HOOK_INSTALLED
    with _HOOK_LOCK:
        if not _HOOK_INSTALLED:
            sys.addaudithook(_audit)
            _HOOK_INSTALLED = True


def _allowed_globals() -> frozenset[str]:
    from torch import _weights_only_unpickler as wou
    from torch import serialization

    names = set(wou._get_allowed_globals())
    for g in serialization.get_safe_globals():  # what the user registered with add_safe_globals
        obj = g[0] if isinstance(g, tuple) else g
        names.add(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', ''))}")
    return frozenset(names)


@contextlib.contextmanager
def _guarded():
    _install_hook()
    guard = _Guard(_allowed_globals(), os.path.join(os.path.abspath(tempfile.gettempdir()), ""))
    token = _ACTIVE.set(guard)
    try:
        yield guard
    finally:
        _ACTIVE.reset(token)


# --------------------------------------------------------------------------- 3. verify
def _resolve_target(text: str) -> Any:
    """What torch's deserializer turns a node target string into (attribute lookups only, no
    calls): a path under ``torch``, ``_operator`` or ``math``; an extension op stays unresolved."""
    roots = {"torch": torch, "_operator": operator, "math": math}
    head, *rest = text.split(".")
    obj = roots.get(head)
    if obj is None:
        return None
    for i, name in enumerate(rest):
        if name.startswith("__") and not (head == "torch" and rest[0] == "ops" and i == 2):
            return None  # dunder attribute paths lead out of the operator registry (aten's __and__ etc. excepted)
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _safe_target(obj: Any) -> bool:
    return isinstance(obj, _op_types()) or obj in _safe_callables()


def _op_types() -> tuple[type, ...]:
    return tuple(t for t in (getattr(torch._ops, "OpOverload", None), getattr(torch._ops, "OpOverloadPacket", None),
                             getattr(torch._ops, "HigherOrderOperator", None)) if t is not None)


@functools.cache
def _safe_callables() -> frozenset[Any]:
    out: set[Any] = {operator.getitem}
    try:
        from torch._export.serde.serialize import _SYM_OPS
        out |= set(_SYM_OPS)
    except ImportError:  # pragma: no cover
        pass
    for name in ("sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sqrt", "_sym_sqrt", "sym_sum",
                 "_assert", "_check", "_check_is_size"):
        if hasattr(torch, name):
            out.add(getattr(torch, name))
    out |= {math.ceil, math.floor, math.trunc, math.sqrt}
    return frozenset(out)


def _verify_graphs(ep: torch.export.ExportedProgram, path: Path) -> None:
    for gm in ep.graph_module.modules():
        graph = getattr(gm, "graph", None)
        if graph is None:
            continue
        for n in graph.nodes:
            if n.op in ("call_method", "call_module"):
                raise _refuse(path, f"has a {n.op} node {n.name!r} ({n.target}), which exported programs do not contain")
            if n.op == "call_function" and not _safe_target(n.target):
                raise _refuse(path, f"calls {getattr(n.target, '__qualname__', n.target)!r} in node {n.name!r}, "
                                    f"which is not a registered operator")


# --------------------------------------------------------------------------- load
class _Collect(logging.Filter):
    """A logger filter that keeps torch's warnings as text and stops every record there, so none
    reaches a handler mid-load (torch formats some of its own warnings wrongly; with TORCH_LOGS
    set, its handlers then raise out of torch.export.load)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            try:
                text = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed torch format string
                text = str(record.msg)
            self.lines.append(" ".join(text.split())[:300])
        return False


@contextlib.contextmanager
def _torch_warnings() -> Iterator[_Collect]:
    """torch's warnings during a load are collected, not printed: the caller refuses on a
    security-relevant one (safe mode) or shows them all as notes (--trust-file)."""
    import torch._export.serde.serialize
    import torch.export.pt2_archive._package  # noqa: F401

    collect = _Collect()
    loggers = [logging.getLogger("torch")] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                                              if n.startswith("torch.")]
    for lg in loggers:
        lg.addFilter(collect)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield collect
    finally:
        for lg in loggers:
            lg.removeFilter(collect)


def load_exported_program(path: Path, trust: bool = False) -> tuple[torch.export.ExportedProgram, torch.nn.Module, list[str]]:
    """(ExportedProgram, runnable module, torch's warnings). Refuses (``UnsafeFileError``) anything
    that would run code from the file unless ``trust``; any other failure is a ``ModelLoadError``."""
    if not path.is_file():
        raise ModelLoadError(f"Exported program not found: {path}.")
    if trust:
        with _torch_warnings() as warned:
            try:
                ep = torch.export.load(str(path))
                module = ep.module()
            except Exception as exc:
                raise ModelLoadError(f"{path} is not a readable torch.export program (.pt2): {type(exc).__name__}: "
                                     f"{first_line(exc)}") from exc
        return ep, module, [f"torch warned while loading: {line}" for line in warned.lines]
    scan_pt2(path)
    with _torch_warnings() as warned, _guarded() as guard:
        try:
            ep = torch.export.load(str(path))
            module = ep.module()  # builds the input-guard function from the (scanned) guards code
        except UnsafeFileError as exc:
            raise _refuse(path, str(exc)) from exc
        except Exception as exc:
            if guard.blocked:
                raise _refuse(path, guard.blocked[0]) from exc
            raise ModelLoadError(f"{path} is not a readable torch.export program (.pt2): {type(exc).__name__}: "
                                 f"{first_line(exc)}") from exc
    if guard.blocked:  # a library swallowed our refusal: still refuse
        raise _refuse(path, guard.blocked[0])
    if any("weights_only=False" in line for line in warned.lines):
        raise _refuse(path, "needed an unrestricted unpickler (torch fell back to weights_only=False)")
    _verify_graphs(ep, path)
    return ep, module, []
