"""Saving from the app: atomic writes (the core's discipline) with one dialog on failure."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

from layerscope.profiler import LayerScopeError
from layerscope.profiler.files.safeio import atomic_write_text


def save_text(parent: QWidget | None, path: str, text: str, what: str, show_dialogs: bool = True) -> bool:
    """Write ``text`` to ``path`` atomically; a failure opens one dialog (the old file is intact)."""
    try:
        atomic_write_text(path, text, what)
    except LayerScopeError as exc:
        if show_dialogs:
            QMessageBox.critical(parent, f"Could not save the {what}", str(exc))
        return False
    return True
