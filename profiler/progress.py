"""Progress reporting for long work, without Qt: core work is a generator that yields
``Progress`` and returns its result. The CLI drives it with a progress bar; the GUI hands the same
generator to a worker thread (closing the generator cancels the work).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from .errors import Cancelled

__all__ = ["Progress", "Work", "drive", "Cancelled", "cancellable", "checkpoint"]

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


_local = threading.local()


@contextmanager
def cancellable(event: threading.Event):
    """Within this block, ``checkpoint()`` on this thread raises ``Cancelled`` once ``event`` is set.

    Work generators stop at their next yield when closed; long steps between yields (one timed run
    of a 10,000-layer model, a capture) call ``checkpoint()`` per node, so Cancel acts within
    milliseconds instead of at the end of the step."""
    previous = getattr(_local, "event", None)
    _local.event = event
    try:
        yield
    finally:
        _local.event = previous


def checkpoint() -> None:
    """Raise ``Cancelled`` when the work on this thread was cancelled (cheap: call it per node)."""
    event = getattr(_local, "event", None)
    if event is not None and event.is_set():
        raise Cancelled("cancelled")
