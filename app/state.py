"""The one app state object: current profile and selected layer. Panels listen to it; panels
never talk to each other. Selecting a layer anywhere selects it everywhere."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal

from layerscope.profiler import Profile

if TYPE_CHECKING:
    from layerscope.profiler.compression import CompressionPlan, CompressResult

BIG_MODEL_LAYERS = 3000  # above this, views refresh in separate event-loop turns and lay out off the GUI thread


class AppState(QObject):
    profileChanged = Signal(object)  # Profile | None
    onnxChanged = Signal(object)  # OnnxProfile | None
    selectionChanged = Signal(str)  # primary layer id, "" for none; ``selected_set`` holds all
    busyChanged = Signal(bool)
    # (CompressResult | None): the compressed candidate of the current plan, shown next to the profile
    compressionChanged = Signal(object)
    planChanged = Signal(object)  # CompressionPlan | None
    analysisChanged = Signal(object)  # (ActivationComparison, [Diagnostic]) | None, for the current candidate
    sweepChanged = Signal(object)  # SweepResult | None: the trade-offs on show
    candidateChanged = Signal(int)  # the sweep candidate picked (its plan is the current plan), 0 for none

    def __init__(self) -> None:
        super().__init__()
        self.profile: Profile | None = None
        self.onnx = None  # OnnxProfile of the current model, when mapped
        self.selected: str = ""
        self.selected_set: tuple[str, ...] = ()
        self.busy = False
        self.pending = 0  # view refreshes queued by ``later``
        self._queue: deque = deque()
        self._pump = QTimer(self, singleShot=True, interval=15)  # leaves room for input, paint and other timers
        self._pump.timeout.connect(self._run_next)
        self.plan: CompressionPlan | None = None  # being built in the compression panel
        self.compression: CompressResult | None = None  # of ``plan``
        self.analysis: Any = None  # (ActivationComparison, diagnostics) of reference vs ``compression``
        self._history: list[tuple[Any, Any, Any]] = []  # (plan, outcome, analysis) before each Apply, for Undo
        self.sweep = None  # SweepResult on show in the trade-off view
        self.candidate = 0  # the sweep candidate picked

    def later(self, fn) -> None:
        """Run a view's heavy refresh in its own event-loop turn when the model is large, so the views
        of a 10,000-layer profile fill one after another, with input and painting in between, instead
        of in one long stall; small models refresh at once. ``pending`` counts queued refreshes."""
        if self.profile is None or len(self.profile.graph) <= BIG_MODEL_LAYERS:
            fn()
            return
        self._queue.append((self.profile, fn))
        self.pending = len(self._queue)
        if not self._pump.isActive():
            self._pump.start()

    def _run_next(self) -> None:
        """One queued refresh per timer turn (a 0 ms post would run the whole queue in one pass)."""
        try:
            if self._queue:
                profile, fn = self._queue.popleft()
                self.pending = len(self._queue)
                if profile is self.profile:  # not superseded by another profile meanwhile
                    fn()
        finally:  # a failing refresh must not stall the ones after it
            if self._queue:
                self._pump.start()

    def set_profile(self, profile: Profile | None) -> None:
        self.profile = profile
        self.selected, self.selected_set = "", ()
        self.onnx = None
        self.plan, self.compression, self.analysis, self._history = None, None, None, []
        self.profileChanged.emit(profile)
        self.selectionChanged.emit("")  # every view drops the old model's selection marks
        self.onnxChanged.emit(None)
        self._emit_compression()

    def _emit_compression(self) -> None:
        self.planChanged.emit(self.plan)
        self.compressionChanged.emit(self.compression)
        self.analysisChanged.emit(self.analysis)

    def set_compression(self, plan, outcome, analysis=None) -> None:
        """A newly applied plan, its outcome and range analysis; the previous ones go on the Undo stack."""
        self._history.append((self.plan, self.compression, self.analysis))
        self.plan, self.compression, self.analysis = plan, outcome, analysis
        self._emit_compression()

    def propose_plan(self, plan) -> None:
        """A plan to look at before it is applied (a sweep candidate's): listed in the Compress panel,
        nothing measured yet; the previous plan and outcome go on the Undo stack."""
        self.set_compression(plan, None, None)

    def set_sweep(self, sweep) -> None:
        self.sweep, self.candidate = sweep, 0
        self.sweepChanged.emit(sweep)
        self.candidateChanged.emit(0)

    def pick_candidate(self, candidate_id: int) -> None:
        """Pick a sweep candidate: its plan becomes the current plan (not yet applied)."""
        from layerscope.profiler.compression import CompressionPlan

        if self.sweep is None or not 1 <= candidate_id <= len(self.sweep.candidates):
            return
        c = self.sweep.by_id(candidate_id)
        self.candidate = candidate_id
        if c.plan is not None:
            self.propose_plan(CompressionPlan.from_data(c.plan, f"sweep candidate #{c.id}"))
        self.candidateChanged.emit(candidate_id)

    def can_undo(self) -> bool:
        return bool(self._history)

    def undo(self) -> None:
        if self._history:
            self.plan, self.compression, self.analysis = self._history.pop()
            self._emit_compression()

    def set_onnx(self, onnx) -> None:
        self.onnx = onnx
        self.onnxChanged.emit(onnx)

    def select(self, layer_id: str) -> None:
        """Select one layer (clicked in any view)."""
        self.select_many((layer_id,) if layer_id else ())

    def select_toggle(self, layer_id: str) -> None:
        """Ctrl+click: add the layer to the selection, or take it out."""
        ids = list(self.selected_set)
        if layer_id in ids:
            ids.remove(layer_id)
        else:
            ids.append(layer_id)
        self.select_many(ids)

    def select_click(self, layer_id: str) -> None:
        """A click in any view: Ctrl/Shift held adds to the selection, otherwise it replaces it."""
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QApplication

        mods = QApplication.keyboardModifiers()
        if mods & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier):
            self.select_toggle(layer_id)
        else:
            self.select(layer_id)

    def select_many(self, layer_ids) -> None:
        """Select several layers at once (e.g. the layers one fused compiled op came from)."""
        ids = tuple(i for i in layer_ids if self.profile is not None and i in self.profile.graph)
        if ids == self.selected_set and (ids[:1] or ("",))[0] == self.selected:
            return
        self.selected_set = ids
        self.selected = ids[0] if ids else ""
        self.selectionChanged.emit(self.selected)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.busyChanged.emit(busy)
