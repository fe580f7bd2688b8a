"""LayerScope's own grammar for the symbolic-shape expressions of a ``.pt2`` (``s0``, ``2*s0 + 1``,
``FloorDiv(s0, 2)``, ``Symbol('s77', positive=True, integer=True)``, ``Eq(s0, 4)``).

torch hands these strings to ``sympy.sympify``, which ``eval``-s them. Here a string from a file is
tokenised and parsed by a small recursive-descent parser into a tree of known parts only: bounded
integers and decimals, shape symbols, ``+ - * / // % **``, comparisons, ``& | ~``, and calls of an
allowlist of sympy/torch shape functions. The text sympy later sees is *printed from that tree* by
this module, so nothing of the file's own text reaches an ``eval``. Powers and shifts take only small
literal exponents and never nest (``(2**64)**64`` and ``Pow(2, 10**29)`` are refused), and length,
depth, argument and call counts are bounded, so an expression cannot hang or exhaust sympy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ExprError", "canonical", "parse", "SYMBOL_RE"]

MAX_CHARS = 4_000
MAX_DEPTH = 32
MAX_ARGS = 16
MAX_CALLS = 256
MAX_INT_DIGITS = 20  # |n| < 10**20: every shape, stride and bound of a real program fits
MAX_EXPONENT = 64

SYMBOL_RE = re.compile(r"[a-z]{1,4}[0-9]{1,9}")  # s0, u12, zuf3, ps1: the shape symbols export emits

# sympy's own arithmetic/logic constructors and torch.utils._sympy.functions (what torch's deserializer
# passes to sympify as locals); nothing else is callable.
FUNCTIONS = frozenset({
    "Add", "Mul", "Pow", "Integer", "Rational", "Float", "Symbol", "Max", "Min", "Abs", "Mod", "floor", "ceiling",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "StrictLessThan", "StrictGreaterThan", "LessThan",
    "GreaterThan", "Equality", "Unequality",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift",
    "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
})
_POWERS = frozenset({"Pow", "PowByNatural", "FloatPow", "LShift", "RShift"})  # second argument: a small literal
_CONSTANTS = frozenset({"True", "False", "oo", "zoo", "nan", "int_oo"})
_SYMBOL_KEYWORDS = frozenset({"positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite",
                              "infinite", "zero", "nonzero", "even", "odd", "rational", "commutative", "extended_real"})

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<float>\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)
  | (?P<int>\d+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>'[^'\\]{0,40}'|"[^"\\]{0,40}")
  | (?P<op>\*\*|//|<=|>=|==|!=|[-+*/%()<>,=&|~])
""", re.VERBOSE)


class ExprError(ValueError):
    """The expression is outside the grammar; the message says which part."""


@dataclass(frozen=True)
class Num:
    text: str  # canonical decimal text


@dataclass(frozen=True)
class Name:
    name: str


@dataclass(frozen=True)
class Sym:  # Symbol('s0', positive=True, integer=True): the srepr form torch >= 2.8 writes
    name: str
    flags: tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Node, ...]


Node = Num | Name | Sym | Unary | Binary | Call


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExprError(f"the character {text[pos]!r} at offset {pos}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "space":
            out.append((kind, m.group()))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.calls = 0

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "end" or (value is not None and tok[1] != value):
            raise ExprError(f"{'the end' if tok[0] == 'end' else repr(tok[1])} where {value or 'more'!r} was expected")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.expr(0)
        if self.peek()[0] != "end":
            raise ExprError(f"unexpected {self.peek()[1]!r}")
        return node

    def expr(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise ExprError(f"nesting deeper than {MAX_DEPTH}")
        return self.binary(0, depth)

    _LEVELS: tuple[tuple[str, ...], ...] = (("|",), ("&",), ("<", ">", "<=", ">=", "==", "!="), ("+", "-"),
                                            ("*", "/", "//", "%"))

    def binary(self, level: int, depth: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary(depth)
        left = self.binary(level + 1, depth)
        ops = self._LEVELS[level]
        while self.peek()[0] == "op" and self.peek()[1] in ops:
            op = self.take()[1]
            right = self.binary(level + 1, depth)
            if level == 2 and isinstance(left, Binary) and left.op in ops:
                raise ExprError("a chained comparison")
            left = Binary(op, left, right)
        return left

    def unary(self, depth: int) -> Node:
        tok = self.peek()
        if tok[0] == "op" and tok[1] in ("-", "+", "~"):
            self.take()
            if depth + 1 > MAX_DEPTH:
                raise ExprError(f"nesting deeper than {MAX_DEPTH}")
            return Unary(tok[1], self.unary(depth + 1))
        return self.power(depth)

    def power(self, depth: int) -> Node:
        base = self.atom(depth)
        if self.peek() == ("op", "**"):
            self.take()
            exponent = self.unary(depth + 1)
            _check_power(base, exponent, "**")
            return Binary("**", base, exponent)
        return base

    def atom(self, depth: int) -> Node:
        kind, text = self.take()
        if kind == "int":
            if len(text.lstrip("0")) > MAX_INT_DIGITS:
                raise ExprError(f"an integer of {len(text)} digits")
            return Num(str(int(text)))
        if kind == "float":
            if len(text) > 40:
                raise ExprError("a decimal of more than 40 characters")
            return Num(repr(float(text)))
        if kind == "op" and text == "(":
            inner = self.expr(depth + 1)
            self.take(")")
            return inner
        if kind == "name":
            if self.peek() == ("op", "("):
                return self.call(text, depth)
            if SYMBOL_RE.fullmatch(text) or text in _CONSTANTS:
                return Name(text)
            raise ExprError(f"the name {text!r}")
        raise ExprError(f"unexpected {text!r}")

    def call(self, func: str, depth: int) -> Node:
        if func not in FUNCTIONS:
            raise ExprError(f"a call of {func!r}")
        self.calls += 1
        if self.calls > MAX_CALLS:
            raise ExprError(f"more than {MAX_CALLS} calls")
        self.take("(")
        if func == "Symbol":
            return self.symbol()
        args: list[Node] = []
        while self.peek() != ("op", ")"):
            if args:
                self.take(",")
            args.append(self.expr(depth + 1))
            if len(args) > MAX_ARGS:
                raise ExprError(f"a call of {func} with more than {MAX_ARGS} arguments")
        self.take(")")
        if func in _POWERS:
            if len(args) != 2:
                raise ExprError(f"{func} with {len(args)} arguments")
            _check_power(args[0], args[1], func)
        if func in ("Integer", "Float") and not (len(args) == 1 and _literal(args[0]) is not None):
            raise ExprError(f"{func} of something other than one literal")
        return Call(func, tuple(args))

    def symbol(self) -> Node:
        kind, text = self.take()
        name = text[1:-1]
        if kind != "string" or not SYMBOL_RE.fullmatch(name):
            raise ExprError(f"a Symbol named {text!r}, not a shape symbol")
        flags: list[tuple[str, bool]] = []
        while self.peek() == ("op", ","):
            self.take(",")
            key = self.take()
            self.take("=")
            value = self.take()
            if key[0] != "name" or key[1] not in _SYMBOL_KEYWORDS or value[1] not in ("True", "False"):
                raise ExprError(f"a Symbol assumption {key[1]}={value[1]}")
            flags.append((key[1], value[1] == "True"))
        self.take(")")
        return Sym(name, tuple(flags))


def _literal(node: Node) -> int | None:
    """The integer a literal (possibly negated) stands for, else None."""
    if isinstance(node, Unary) and node.op == "-":
        inner = _literal(node.operand)
        return None if inner is None else -inner
    if isinstance(node, Call) and node.func == "Integer" and len(node.args) == 1:
        return _literal(node.args[0])
    if isinstance(node, Num) and "." not in node.text and "e" not in node.text:
        return int(node.text)
    return None


def _has_power(node: Node) -> bool:
    stack: list[Node] = [node]
    while stack:
        n = stack.pop()
        if (isinstance(n, Binary) and n.op == "**") or (isinstance(n, Call) and n.func in _POWERS):
            return True
        if isinstance(n, Unary):
            stack.append(n.operand)
        elif isinstance(n, Binary):
            stack += [n.left, n.right]
        elif isinstance(n, Call):
            stack += n.args
    return False


def _check_power(base: Node, exponent: Node, what: str) -> None:
    value = _literal(exponent)
    if value is None or abs(value) > MAX_EXPONENT:
        raise ExprError(f"{what} whose exponent is not a literal integer within ±{MAX_EXPONENT}")
    if _has_power(base):
        raise ExprError(f"a power of a power ({what})")


def parse(text: object) -> Node:
    """The tree of ``text``; ``ExprError`` saying what is outside the grammar."""
    if not isinstance(text, str):
        raise ExprError(f"a {type(text).__name__} where an expression was expected")
    if len(text) > MAX_CHARS:
        raise ExprError(f"an expression of {len(text):,} characters (at most {MAX_CHARS:,})")
    return _Parser(text).parse()


def _print(node: Node) -> str:
    if isinstance(node, Num):
        return node.text
    if isinstance(node, Name):
        return node.name
    if isinstance(node, Sym):
        flags = "".join(f", {k}={v}" for k, v in node.flags)
        return f"Symbol('{node.name}'{flags})"
    if isinstance(node, Unary):
        return f"{node.op}({_print(node.operand)})"
    if isinstance(node, Binary):
        return f"({_print(node.left)} {node.op} {_print(node.right)})"
    return f"{node.func}({', '.join(_print(a) for a in node.args)})"


def canonical(text: object) -> str:
    """``text`` printed back from its parsed tree (fully parenthesised): the only form of a file's
    expression that is handed to sympy. Raises ``ExprError``."""
    return _print(parse(text))
