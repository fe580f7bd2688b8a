"""Profiling controller: runs the core's work generators on a worker thread with one progress
window per job (overall progress across stages, the stage, an ETA, and a Cancel that stops the work
at the next layer); a failure opens one dialog and leaves the current profile in place."""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMessageBox, QWidget
from superqt.utils import create_worker

from layerscope.profiler import Cancelled, LayerScopeError, Profile, Progress
from layerscope.profiler.errors import UnsafeFileError
from layerscope.profiler.history import Record
from layerscope.profiler.jobs import ModelRequest, compress_job, onnx_job, open_profile_job, open_run_job, profile_job
from layerscope.profiler.progress import cancellable

from .progress_window import JobProgress
from .state import AppState

log = logging.getLogger(__name__)

# Rough share of a job's time per stage, in the order stages come: overall progress and the ETA.
PROFILE_STAGES = {"load": 3, "calibrate": 10, "capture": 12, "warm-up": 8, "timing": 60, "views": 7}
OPEN_STAGES = {"load": 80, "views": 20}
ONNX_STAGES = {"load": 5, "onnx": 95}
COMPRESS_STAGES = {"load": 3, "ort int8": 14, "compress": 14, "capture": 8, "warm-up": 4, "timing": 30, "latency": 8,
                   "compare": 19}


def prepare_views(profile: Profile):
    """What the views would otherwise compute on the GUI thread: joined rows, module totals, and
    the graph layout at each depth the graph view offers. Runs in the worker, after profiling."""
    depths = (None, 1, 2, 3)
    yield Progress("views", 0, len(depths) + 1, "indexing layers")
    profile.rows()
    profile.row_index()
    profile.module_table()
    profile.totals_by("type")
    for k, depth in enumerate(depths, start=1):
        profile.graph.view(depth)
        yield Progress("views", k, len(depths) + 1, f"graph layout {'all layers' if depth is None else f'to depth {depth}'}")
    settle_heap()
    return profile


def settle_heap() -> None:
    """Take what is alive now (the new profile, the views' data) out of the cyclic collector's reach.

    A 10,000-layer profile is millions of small objects; without this, Python's full collections
    walk all of them at random moments later, 0.6–0.9 s with the GUI thread blocked (seen on a
    click). Frozen objects are still freed by reference counting. The next job unfreezes first, so
    an old profile's cycles are collected by that job's own collections, while its progress window
    is up, never during a click."""
    gc.freeze()


def with_views(job):
    """A job that returns a Profile, followed by ``prepare_views`` in the same worker."""
    profile = yield from job
    return (yield from prepare_views(profile))


def _run_with_views(run_id: int, history: str | None):
    """``open_run_job``, and the views of its profile prepared in the same worker."""
    profile, sweep = yield from open_run_job(run_id, history)
    if profile is not None:
        profile = yield from prepare_views(profile)
    return profile, sweep


def _cancellable(job, event: threading.Event, *args, **kwargs):
    """Run ``job`` so that the core's per-node checkpoints see this job's Cancel."""
    gc.unfreeze()  # the previous job's frozen objects: collectable again during this job (see settle_heap)
    with cancellable(event):
        return (yield from job(*args, **kwargs))


class ProfileController(QObject):
    finished = Signal(object)  # Profile
    onnxFinished = Signal(object)  # OnnxProfile
    compressFinished = Signal(object, object)  # CompressionPlan, CompressionOutcome
    sweepOpened = Signal(object)  # SweepResult
    failed = Signal(str)
    cancelled = Signal()
    stopped = Signal(float)  # seconds from Cancel to the worker's end

    def __init__(self, state: AppState, parent: QWidget | None = None, show_dialogs: bool = True) -> None:
        super().__init__(parent)
        self.state = state
        self.parent_widget = parent
        self.show_dialogs = show_dialogs
        self.worker: Any = None
        self.window: JobProgress | None = None
        self.last_request: ModelRequest | None = None
        self._retry: ModelRequest | None = None  # the user chose to trust a refused file: load it again
        self._event: threading.Event | None = None
        # injectable (tests): what a Cancel sets, and the clock its delay is read on
        self.new_event: Callable[[], threading.Event] = threading.Event
        self.clock: Callable[[], float] = time.perf_counter
        self._cancel_at: float | None = None
        self._was_cancelled = False
        self.history: str | None = None  # the history database runs are recorded in (None: the default); the last one opened

    def start(self, req: ModelRequest) -> None:
        self.last_request = req
        self._run(with_views, (profile_job(req, Record(self.history)),), f"Profiling {req.model or 'the default model'}", self._on_returned,
                  PROFILE_STAGES)

    def open_profile(self, path: str) -> None:
        self._run(with_views, (open_profile_job(path),), f"Opening {path.rsplit('/', 1)[-1]}", self._on_returned, OPEN_STAGES)

    def open_run(self, run_id: int, history: str | None = None) -> None:
        """A recorded run: a sweep's trade-offs (its reference profile in every view) or a profile run's profile.
        Later runs are recorded in the same database."""
        self.history = history
        self._run(_run_with_views, (run_id, history), f"Opening history run {run_id}", self._on_run, OPEN_STAGES)

    def _on_run(self, loaded) -> None:
        profile, sweep = loaded
        if profile is not None and profile is not self.state.profile:
            self.state.set_profile(profile)
        self.state.set_sweep(sweep)
        if sweep is not None:
            self.sweepOpened.emit(sweep)
        self.finished.emit(profile)

    def _reload_request(self, **changes) -> ModelRequest | None:
        """The request that loads the current profile's model again (same inputs, same trust)."""
        p = self.state.profile
        return None if p is None else ModelRequest.for_profile(p, trust_file=self._trusted(), **changes)

    def _trusted(self) -> bool:
        """The current profile's model was loaded with --trust-file: reloading it needs the same."""
        req, p = self.last_request, self.state.profile
        return bool(req and req.trust_file and p is not None and req.model == p.model.spec)

    def map_onnx(self, level: str = "all", onnx_path: str | None = None, runs: int = 20) -> None:
        req = ModelRequest(runs=runs) if onnx_path else self._reload_request(runs=runs)
        if req is None:
            self._on_error(LayerScopeError("Profile a model first (File → Open model), or open a plain .onnx file."))
            return
        self._run(onnx_job, (req, level), f"Exporting and profiling in ONNX Runtime ({level})", self._on_onnx, ONNX_STAGES,
                  onnx_path=onnx_path)

    def compress(self, plan, ort_int8: bool = False, data: str | None = None, runs: int = 10) -> None:
        req = self._reload_request(runs=runs)
        if req is None:
            self._on_error(LayerScopeError("Profile a model first (File → Open model)."))
            return
        self._run(compress_job, (req, plan, data), "Applying the compression plan",
                  lambda result: self._on_compressed(plan, result), COMPRESS_STAGES, ort_int8=ort_int8, profile=self.state.profile,
                  record=Record(self.history))

    def _on_compressed(self, plan, result) -> None:
        self.state.set_compression(plan, result, (result.comparison, result.diagnostics))
        self.compressFinished.emit(plan, result)

    def _run(self, job, args: tuple, title: str, on_result, stages: Mapping[str, float], **kwargs) -> None:
        if self.worker is not None:
            return  # one job at a time; the progress window is modal
        self._event = self.new_event()
        self._cancel_at, self._was_cancelled = None, False
        self.worker = create_worker(_cancellable, job, self._event, *args, _start_thread=False, _ignore_errors=True, **kwargs)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(on_result)
        self.worker.errored.connect(self._on_error)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        self.window = JobProgress(title, stages, self.parent_widget if self.show_dialogs else None)
        self.window.cancelRequested.connect(self.cancel)
        if self.show_dialogs:
            self.window.show()
        self.state.set_busy(True)
        self.worker.start()

    def cancel(self) -> None:
        """Stop the running job: the core checks per node, so it ends within a layer's time."""
        if self.worker is None or self._cancel_at is not None:
            return
        self._cancel_at = self.clock()
        if self._event is not None:
            self._event.set()
        self.worker.quit()
        if self.window is not None:
            self.window.cancelling()

    def _on_progress(self, p: Progress) -> None:
        if self.window is not None:
            self.window.update_progress(p)

    def _on_returned(self, profile: Profile) -> None:
        self.state.set_profile(profile)
        self.finished.emit(profile)

    def _on_onnx(self, onnx) -> None:
        self.state.set_onnx(onnx)
        self.onnxFinished.emit(onnx)

    def _on_error(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled) or self._cancel_at is not None:
            self._on_aborted()  # the core stopped at a checkpoint: a cancel, not a failure
            return
        msg = str(exc) if isinstance(exc, LayerScopeError) else f"{type(exc).__name__}: {exc}"
        log.error("job failed: %s", msg, exc_info=(type(exc), exc, exc.__traceback__) if log.isEnabledFor(logging.DEBUG) else None)
        req = self.last_request
        if isinstance(exc, UnsafeFileError) and self.show_dialogs and req is not None and not req.trust_file:
            box = QMessageBox(QMessageBox.Icon.Warning, "This model file wants to run code", msg,
                              QMessageBox.StandardButton.Cancel, self.parent_widget)
            trust = box.addButton("Trust this file and load it", QMessageBox.ButtonRole.AcceptRole)
            box.setDefaultButton(QMessageBox.StandardButton.Cancel)
            box.exec()  # a nested event loop: the worker may finish meanwhile
            self.failed.emit(msg)
            if box.clickedButton() is trust:
                self._retry = dataclasses.replace(req, trust_file=True)
                if self.worker is None:
                    self._start_retry()
            return
        if self.show_dialogs:
            QMessageBox.critical(self.parent_widget, "LayerScope could not finish", msg)
        self.failed.emit(msg)

    def _on_aborted(self) -> None:
        if not self._was_cancelled:
            self._was_cancelled = True
            self.cancelled.emit()

    def _on_finished(self) -> None:
        self.worker = None  # first: closing the window must not read as a Cancel of a running job
        if self.window is not None:
            self.window.close()
            self.window.deleteLater()
            self.window = None
        if self._cancel_at is not None:
            self.stopped.emit(self.clock() - self._cancel_at)
        self.state.set_busy(False)
        self._start_retry()

    def _start_retry(self) -> None:
        retry, self._retry = self._retry, None
        if retry is not None:
            self.start(retry)
