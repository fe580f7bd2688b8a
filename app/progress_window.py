"""One progress window per job: overall progress across the job's stages, the stage and its detail,
elapsed time and an ETA, and a Cancel that says what it is doing. It stays up from the first stage
to the last (a QProgressDialog closes itself each time a stage reaches 100 %)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from layerscope.profiler import Progress


def _secs(s: float) -> str:
    s = int(round(s))
    return f"{s} s" if s < 90 else f"{s // 60} min {s % 60:02d} s"


class JobProgress(QDialog):
    cancelRequested = Signal()

    def __init__(self, title: str, stages: Mapping[str, float], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("LayerScope — working")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumWidth(460)
        self.stages = dict(stages)
        self.total = sum(self.stages.values()) or 1.0
        self.fraction = 0.0  # overall, never goes back
        self.started = time.perf_counter()
        self.stage = ""
        self.title = QLabel(f"<b>{title}</b>")
        self.title.setWordWrap(True)
        self.detail = QLabel("starting…")
        self.detail.setWordWrap(True)
        self.detail.setMinimumHeight(self.detail.fontMetrics().height() * 2)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.eta = QLabel("")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.request_cancel)
        bottom = QHBoxLayout()
        bottom.addWidget(self.eta, 1)
        bottom.addWidget(self.cancel_btn)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.detail)
        layout.addWidget(self.bar)
        layout.addLayout(bottom)

    def update_progress(self, p: Progress) -> None:
        if p.stage not in self.stages:  # a stage we did not plan for: give it a small share at the end
            self.stages[p.stage] = 5.0
            self.total += 5.0
        names = list(self.stages)
        before = sum(self.stages[n] for n in names[:names.index(p.stage)])
        self.fraction = max(self.fraction, min(1.0, (before + self.stages[p.stage] * p.fraction) / self.total))
        self.stage = p.stage
        n = names.index(p.stage) + 1
        self.detail.setText(f"Stage {n} of {len(names)}: <b>{p.stage}</b>" + (f" — {p.detail}" if p.detail else "")
                            + (f" ({p.done}/{p.total})" if p.total > 1 else ""))
        self.bar.setValue(int(1000 * self.fraction))
        self._eta()

    def _eta(self) -> None:
        elapsed = time.perf_counter() - self.started
        text = f"{_secs(elapsed)} elapsed"
        if self.fraction >= 0.03 and elapsed >= 1.0:
            text += f" · about {_secs(elapsed * (1 - self.fraction) / self.fraction)} left"
        self.eta.setText(text)

    def request_cancel(self) -> None:
        self.cancelRequested.emit()

    def cancelling(self) -> None:
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.setText("Cancelling…")
        self.detail.setText(f"Cancelling — stopping at the next layer ({self.stage or 'starting'})…")

    def reject(self) -> None:  # Esc or the window's close button: cancel, do not just hide
        if getattr(self, "_closing", False):
            super().reject()  # the job ended and the controller closes the window
            return
        self.request_cancel()

    def closeEvent(self, event) -> None:
        if self.cancel_btn.isEnabled() and self.isVisible() and not getattr(self, "_closing", False):
            event.ignore()
            self.request_cancel()
            return
        super().closeEvent(event)

    def close(self) -> bool:  # the controller closes it when the job ends
        self._closing = True
        return super().close()
