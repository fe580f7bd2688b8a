"""Profiling controller: runs the core's profile generator on a worker thread with a progress
dialog and Cancel; a failure opens one dialog and leaves the current profile in place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QMessageBox, QProgressDialog, QWidget
from superqt.utils import create_worker

from layerscope.profiler import LayerScopeError, Profile, Progress, load_model, profile_model, resolve_hardware
from layerscope.profiler.errors import UnsafeFileError
from layerscope.profiler.resources import parse_device
from layerscope.profiler.source import parse_dtype, parse_input_shapes

from .state import AppState


@dataclass(frozen=True)
class ProfileRequest:
    model: str | None = None  # zoo name, file.py:factory or .pt2; None = default model
    input_shape: str | None = None
    dtype: str | None = None
    runs: int = 20
    warmup: int = 3
    hardware: str = "this"
    device: str = "cpu"
    trust_file: bool = False  # a .pt2 may run code when loaded: only when the user said so


def profile_job(req: ProfileRequest):
    """The whole job as one generator: load, (calibrate), profile."""
    yield Progress("load", 0, 1, req.model or "default model")
    parse_device(req.device)
    loaded = load_model(req.model, parse_input_shapes(req.input_shape), parse_dtype(req.dtype), trust_file=req.trust_file)
    yield Progress("load", 1, 1, loaded.name)
    hw = yield from resolve_hardware(req.hardware, "cuda" if req.device.startswith("cuda") else "cpu")
    return (yield from profile_model(loaded, hw, runs=req.runs, warmup=req.warmup, device=req.device))


def onnx_job(profile: Profile | None, onnx_path: str | None, level: str, runs: int, trust_file: bool = False):
    """Map ONNX Runtime ops for the current profile's model, or for a plain .onnx file."""
    from layerscope.profiler.onnx_map import map_onnx

    if onnx_path:
        return (yield from map_onnx(onnx_path=onnx_path, opt_level=level, runs=runs, name=onnx_path.rsplit("/", 1)[-1]))
    if profile is None:
        raise LayerScopeError("Profile a model first (File → Open model), or open a plain .onnx file.")
    m = profile.model
    yield Progress("load", 0, 1, m.spec)
    shapes = [tuple(s) for s in m.input_shapes]
    loaded = load_model(m.spec, shapes, parse_dtype(m.compute_dtype) if m.compute_dtype != "float32" else None,
                        trust_file=trust_file, max_memory_bytes=0)
    return (yield from map_onnx(loaded.module, loaded.inputs, profile.graph, opt_level=level, runs=runs, name=m.name))


def compress_job(profile: Profile, plan, ort_int8: bool, data: str | None, runs: int = 10, trust_file: bool = False):
    """Reload the profiled model, apply ``plan`` to a copy, profile the copy (and time ORT int8), then
    compare activation ranges layer by layer and diagnose."""
    from layerscope.profiler.compression import compress
    from layerscope.profiler.data import samples_for
    from layerscope.profiler.diagnose import diagnose
    from layerscope.profiler.ranges import compare_models

    m = profile.model
    yield Progress("load", 0, 1, m.spec)
    loaded = load_model(m.spec, [tuple(s) for s in m.input_shapes], parse_dtype(m.compute_dtype) if m.compute_dtype != "float32" else None,
                        trust_file=trust_file, max_memory_bytes=0)
    samples = samples_for(loaded, data)
    outcome = yield from compress(loaded, profile, plan, samples, profile.hardware, runs=runs, ort_int8=ort_int8)
    cmp = yield from compare_models(loaded.module, outcome.candidate, samples, f"{m.name} (float)", f"{m.name} (compressed)")
    return outcome, (cmp, diagnose(cmp, profile.graph, outcome.report.resolved, loaded.module))


class ProfileController(QObject):
    finished = Signal(object)  # Profile
    onnxFinished = Signal(object)  # OnnxProfile
    compressFinished = Signal(object, object)  # CompressionPlan, CompressionOutcome
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, state: AppState, parent: QWidget | None = None, show_dialogs: bool = True) -> None:
        super().__init__(parent)
        self.state = state
        self.parent_widget = parent
        self.show_dialogs = show_dialogs
        self.worker: Any = None
        self.dialog: QProgressDialog | None = None
        self.last_request: ProfileRequest | None = None
        self._retry: ProfileRequest | None = None  # the user chose to trust a refused file: load it again

    def start(self, req: ProfileRequest) -> None:
        self.last_request = req
        self._run(profile_job, (req,), f"Profiling {req.model or 'default model'}…", self._on_returned)

    def _trusted(self) -> bool:
        """The current profile's model was loaded with --trust-file: reloading it needs the same."""
        req, p = self.last_request, self.state.profile
        return bool(req and req.trust_file and p is not None and req.model == p.model.spec)

    def map_onnx(self, level: str = "all", onnx_path: str | None = None, runs: int = 20) -> None:
        self._run(onnx_job, (self.state.profile, onnx_path, level, runs, self._trusted()),
                  f"Exporting and profiling in ONNX Runtime ({level})…", self._on_onnx)

    def compress(self, plan, ort_int8: bool = False, data: str | None = None, runs: int = 10) -> None:
        if self.state.profile is None:
            self._on_error(LayerScopeError("Profile a model first (File → Open model)."))
            return
        self._run(compress_job, (self.state.profile, plan, ort_int8, data, runs, self._trusted()), "Applying the compression plan…",
                  lambda result: self._on_compressed(plan, *result))

    def _on_compressed(self, plan, outcome, analysis) -> None:
        self.state.set_compression(plan, outcome, analysis)
        self.compressFinished.emit(plan, outcome)

    def _run(self, job, args: tuple, title: str, on_result) -> None:
        if self.worker is not None:
            return  # one job at a time; the progress dialog is modal
        self.worker = create_worker(job, *args, _start_thread=False, _ignore_errors=True)  # errors: _on_error
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(on_result)
        self.worker.errored.connect(self._on_error)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        if self.show_dialogs:
            self.dialog = QProgressDialog(title, "Cancel", 0, 1000, self.parent_widget)
            self.dialog.setWindowTitle("LayerScope — working")
            self.dialog.setWindowModality(Qt.WindowModality.WindowModal)
            self.dialog.setMinimumDuration(0)
            self.dialog.setMinimumWidth(420)
            self.dialog.canceled.connect(self.cancel)
            self.dialog.show()
        self.state.set_busy(True)
        self.worker.start()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()

    def _on_progress(self, p: Progress) -> None:
        if self.dialog is not None:
            self.dialog.setLabelText(f"{p.stage}: {p.detail}" if p.detail else p.stage)
            self.dialog.setValue(int(1000 * p.fraction))

    def _on_returned(self, profile: Profile) -> None:
        self.state.set_profile(profile)
        self.finished.emit(profile)

    def _on_onnx(self, onnx) -> None:
        self.state.set_onnx(onnx)
        self.onnxFinished.emit(onnx)

    def _on_error(self, exc: BaseException) -> None:
        msg = str(exc) if isinstance(exc, LayerScopeError) else f"{type(exc).__name__}: {exc}"
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
        self.cancelled.emit()

    def _on_finished(self) -> None:
        if self.dialog is not None:
            self.dialog.reset()
            self.dialog.deleteLater()
            self.dialog = None
        self.worker = None
        self.state.set_busy(False)
        self._start_retry()

    def _start_retry(self) -> None:
        retry, self._retry = self._retry, None
        if retry is not None:
            self.start(retry)
