"""Refuse a Qt binding known to corrupt the interpreter before it can crash the app.

PySide6 6.12.0 on Python 3.11 drops one reference to ``None`` on every void Qt call (``setPos``,
``setTransform``, ``setToolTip``…). Panning a graph makes hundreds of such calls per frame, and
within seconds CPython aborts with ``Fatal Python error: none_dealloc``. On Python 3.12+ ``None`` is
immortal, so the same binding is harmless there. pyproject.toml excludes the combination; this
check catches an environment that got it anyway (``--no-deps``, a pinned lock file, a conda env).
"""

from __future__ import annotations

import sys

from layerscope.profiler import LayerScopeError

_KEEP: list[None] = []  # references the probe lost, given back so the probe itself never hurts


def none_is_immortal() -> bool:
    return sys.getrefcount(None) >= 2**30


def none_refs_lost(calls: int = 200) -> int:
    """How many references to ``None`` ``calls`` void Qt calls lose (0 on a sound binding)."""
    if none_is_immortal():
        return 0
    from PySide6.QtGui import QTransform
    from PySide6.QtWidgets import QGraphicsRectItem

    item, t = QGraphicsRectItem(0, 0, 1, 1), QTransform()
    before = sys.getrefcount(None)
    for i in range(calls):
        item.setPos(i, 0)
        t.setMatrix(1, 0, 0, 0, 1, 0, 0, 0, 1)
    lost = before - sys.getrefcount(None)
    if lost > 0:
        _KEEP.extend([None] * lost)
    return lost


def check_qt_binding() -> None:
    """Raise if this PySide6 leaks references to ``None`` on this Python."""
    lost = none_refs_lost()
    if lost >= 100:  # 2 per loop iteration on a leaking binding; a sound one stays within a few
        import ctypes

        import PySide6

        # Qt's own shutdown makes more leaking calls: without headroom the interpreter would abort
        # on exit right after printing this message. Give None the headroom 3.12+ gives it for free.
        ctypes.c_ssize_t.from_address(id(None)).value += 2**30

        py = ".".join(map(str, sys.version_info[:3]))
        raise LayerScopeError(
            f"PySide6 {PySide6.__version__} on Python {py} loses a reference to None on every Qt call "
            f"({lost} in {2 * 200} calls) and would crash the app within seconds of panning (none_dealloc). "
            "Install a sound binding: pip install 'PySide6-Essentials>=6.6,<6.12' — or use Python 3.12 or newer.")
