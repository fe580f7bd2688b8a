"""Human-readable numbers, shared by the CLI and the GUI."""

from __future__ import annotations

import math

__all__ = ["fmt_count", "fmt_bytes", "fmt_ms", "fmt_pct", "fmt_db", "printable"]


def fmt_count(n: float | None) -> str:
    if n is None:
        return "unknown"
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_ms(ms: float | None) -> str:
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return "-"
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def fmt_pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def fmt_db(v: float | None, unit: str = " dB", none: str = "n/a") -> str:
    """An SQNR: "exact" when there is no error at all (+inf)."""
    if v is None:
        return none
    return "exact" if math.isinf(v) and v > 0 else f"{v:.1f}{unit}"


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)] if c not in (0x09, 0x0A)}
_CONTROL.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


def printable(text: object) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``), so a name from a model or a
    file is displayed as text and never drives the terminal (colours, cursor moves, hyperlinks, titles)."""
    return str(text).translate(_CONTROL)
