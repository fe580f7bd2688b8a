"""Progress reporting for long work, without Qt: core work is a generator that yields
``Progress`` and returns its result. The CLI drives it with a progress bar; the GUI hands the same
generator to a worker thread (closing the generator cancels the work).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Progress", "Work", "drive"]

R = TypeVar("R")


@dataclass(frozen=True)
class Progress:
    stage: str  # "capture", "timing", "calibrate", ...
    done: int
    total: int
    detail: str = ""  # e.g. the layer id being worked on

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


Work = Generator[Progress, None, R]


def drive(work: Work[R], on_progress: Callable[[Progress], None] | None = None) -> R:
    """Run a work generator to completion, passing each Progress to ``on_progress``."""
    while True:
        try:
            p = next(work)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(p)
