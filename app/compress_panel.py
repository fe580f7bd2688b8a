"""Compression panel: pick layers (or let a selector pick them), a technique and a strength, Apply.

Every Apply re-runs the whole plan on a fresh copy of the model in the worker thread, so the
before/after numbers always describe exactly the plan in the list. Undo steps back to the previous
plan and its outcome (kept, not recomputed). No compression logic lives here: the panel only
builds LayerSpecs and shows the core's CompressionReport.
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMenu,
    QMessageBox,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import create_worker

from layerscope.profiler import LayerScopeError, Profile
from layerscope.profiler.compression import CompressionPlan, CompressResult, LayerSpec, select_layers
from layerscope.profiler.compression.specs import Calibration, CastDtype, Granularity, QuantizeParams, Technique, default, limits

from .compress_text import config_text, estimate_html, summary_html
from .controller import ProfileController
from .files import save_text
from .state import AppState


@dataclass(frozen=True)
class Knob:
    """One technique in the panel: which parameter the strength slider sets and how it reads. The
    slider's range and start come from the technique's spec (``compression.specs``), never restated."""
    technique: Technique
    param: str | None  # None: no slider
    text: Callable[[int], str]
    percent: bool = False  # a fraction shown as whole percent
    fixed: tuple[tuple[str, Any], ...] = ()

    def span(self) -> tuple[int, int, int]:
        """(lowest, highest, default) slider positions."""
        if self.param is None:
            return 0, 0, 0
        lim, scale = limits(self.technique, self.param), 100 if self.percent else 1
        hi = lim.hi if lim.hi is not None else lim.lo
        lo_pos = math.ceil(lim.lo * scale) + (1 if lim.lo_open else 0)
        hi_pos = math.floor(hi * scale) - (1 if lim.hi_open else 0)
        return lo_pos, hi_pos, round(default(self.technique, self.param) * scale)

    def value(self, position: int) -> int | float:
        return round(position / 100, 4) if self.percent else position


TECHNIQUES = {
    "Quantize weights (int)": Knob(Technique.QUANTIZE, "bits", lambda v: f"{v} bits"),
    "Palettize (k-means LUT)": Knob(Technique.PALETTIZE, "bits", lambda v: f"{v} bits ({2 ** v} centroids)"),
    "Prune (unstructured)": Knob(Technique.PRUNE, "sparsity", lambda v: f"{v}% zeros", percent=True),
    "Prune channels (structured)": Knob(Technique.PRUNE_CHANNELS, "amount", lambda v: f"remove {v}% of channels", percent=True),
    "Cast to float16": Knob(Technique.CAST, None, lambda v: "16 bits", fixed=(("dtype", str(CastDtype.FLOAT16)),)),
}


class CompressionPanel(QWidget):
    def __init__(self, state: AppState, controller: ProfileController) -> None:
        super().__init__()
        self.state = state
        self.controller = controller
        self._usable_ids: set[str] = set()
        self._usable_for: Profile | None = None
        self._estimate_gen = 0
        self._workers: set = set()
        self.selection_label = QLabel()
        self.selection_label.setWordWrap(True)
        pick, form, buttons, files = self._pick_row(), self._technique_form(), self._buttons(), self._plan_files()
        self.estimate = QLabel()
        self.estimate.setWordWrap(True)
        self.estimate.setTextFormat(Qt.TextFormat.RichText)
        self.estimate.setToolTip("Computed from shapes at once (no model run). Apply measures latency, output error "
                                 "and the real sizes.")
        self.summary = QLabel("Select layers, pick a technique and a strength, then Apply.")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        layout = QVBoxLayout(self)
        layout.addWidget(self.selection_label)
        layout.addLayout(pick)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.estimate)
        layout.addWidget(QLabel("Plan (later specs win for the same layer):"))
        layout.addWidget(self.plan_list)
        layout.addLayout(files)
        layout.addWidget(self.summary)
        layout.addStretch(1)
        state.selectionChanged.connect(self._on_selection)
        state.selectionChanged.connect(lambda _lid: state.later(self.update_estimate))
        state.planChanged.connect(self._on_plan)
        state.compressionChanged.connect(self._on_compression)
        state.profileChanged.connect(lambda _p: self._on_selection(""))
        state.busyChanged.connect(self._on_busy)
        self._on_technique(self.technique.currentText())
        self._on_selection("")
        self._on_plan(None)

    # ------------------------------------------------------------------ building
    def _pick_row(self) -> QHBoxLayout:
        """Select memory-bound, compute-bound or the slowest layers."""
        pick = QHBoxLayout()
        self.pick_memory = QPushButton("Memory-bound")
        self.pick_compute = QPushButton("Compute-bound")
        self.topk = QSpinBox(minimum=1, maximum=999, value=5, prefix="top ")
        self.pick_top = QPushButton("Slowest")
        for w in (QLabel("Select:"), self.pick_memory, self.pick_compute, self.pick_top, self.topk):
            pick.addWidget(w)
        pick.addStretch(1)
        self.pick_memory.clicked.connect(lambda: self._select("memory-bound"))
        self.pick_compute.clicked.connect(lambda: self._select("compute-bound"))
        self.pick_top.clicked.connect(lambda: self._select(f"top:{self.topk.value()}"))
        return pick

    def _technique_form(self) -> QFormLayout:
        """Technique, strength (range and start from the technique's spec), granularity, activations."""
        self.technique = QComboBox()
        self.technique.addItems(list(TECHNIQUES))
        self.strength = QSlider(Qt.Orientation.Horizontal)
        self.strength_label = QLabel()
        self.granularity = QComboBox()
        self.granularity.addItems([Granularity.PER_CHANNEL, Granularity.PER_TENSOR])  # group needs a group size: plan files
        self.activations = QCheckBox("int8 activations, calibrated with")
        self.calibration = QComboBox()
        self.calibration.addItems(list(Calibration))
        act_row = QHBoxLayout()
        act_row.addWidget(self.activations)
        act_row.addWidget(self.calibration)
        act_row.addStretch(1)
        form = QFormLayout()
        form.addRow("Technique", self.technique)
        strength_row = QHBoxLayout()
        strength_row.addWidget(self.strength, 1)
        strength_row.addWidget(self.strength_label)
        self.strength_label.setMinimumWidth(self.strength_label.fontMetrics().horizontalAdvance("remove 90% of channels"))
        form.addRow("Strength", strength_row)
        form.addRow("Granularity", self.granularity)
        form.addRow("", act_row)
        self.technique.currentTextChanged.connect(self._on_technique)
        self.strength.valueChanged.connect(self._on_strength)
        for w in (self.technique, self.granularity):
            w.currentIndexChanged.connect(lambda _i: self.update_estimate())
        self.strength.valueChanged.connect(lambda _v: self.update_estimate())
        self.activations.toggled.connect(lambda _on: self.update_estimate())
        return form

    def _buttons(self) -> QVBoxLayout:
        """Apply / ORT / Undo / Clear, in two rows: fits a narrow right column on a 1366-px screen."""
        buttons = QVBoxLayout()  # two rows: fits a narrow right column on a 1366-px screen
        row1, row2 = QHBoxLayout(), QHBoxLayout()
        self.apply_btn = QPushButton("Apply to selection")
        self.apply_btn.setDefault(True)
        self.ort = QCheckBox("measure int8 in ONNX Runtime")
        self.undo_btn = QPushButton("Undo")
        self.clear_btn = QPushButton("Clear plan")
        for w in (self.apply_btn, self.ort):
            row1.addWidget(w)
        for w in (self.undo_btn, self.clear_btn):
            row2.addWidget(w)
        for r in (row1, row2):
            r.addStretch(1)
            buttons.addLayout(r)
        self.apply_btn.clicked.connect(self.apply_to_selection)
        self.undo_btn.clicked.connect(self.state.undo)
        self.clear_btn.clicked.connect(self.clear_plan)
        return buttons

    def _plan_files(self) -> QHBoxLayout:
        """The plan list, and Save / Load / Export of the plan."""
        self.plan_list = QListWidget()
        self.plan_list.setMaximumHeight(110)
        self.plan_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.plan_list.setUniformItemSizes(True)  # a plan over thousands of layers lists fast
        files = QHBoxLayout()
        self.save_btn = QPushButton("Save plan…")
        self.load_btn = QPushButton("Load plan…")
        self.export_btn = QToolButton()
        self.export_btn.setText("Export config ▾")
        self.export_btn.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.export_btn)
        menu.addAction("ONNX Runtime quantize args…", lambda: self.export("ort"))
        menu.addAction("coremltools.optimize.torch configs…", lambda: self.export("coreml"))
        menu.addAction("torchao FqnToConfig…", lambda: self.export("torchao"))
        menu.addAction("OpenVINO NNCF steps and IgnoredScope…", lambda: self.export("nncf"))
        menu.addAction("torch.ao QConfigMapping (deprecated)…", lambda: self.export("torch.ao"))
        self.export_btn.setMenu(menu)
        for w in (self.save_btn, self.load_btn, self.export_btn):
            files.addWidget(w)
        files.addStretch(1)
        self.save_btn.clicked.connect(self.save_plan)
        self.load_btn.clicked.connect(self.load_plan)
        return files

    # ------------------------------------------------------------------ controls
    def _on_technique(self, label: str) -> None:
        knob = TECHNIQUES[label]
        lo, hi, start = knob.span()
        self.strength.setEnabled(knob.param is not None)
        self.strength.setRange(lo, hi)
        self.strength.setValue(start)
        self.granularity.setEnabled(knob.technique is Technique.QUANTIZE)
        self._on_strength(self.strength.value())

    def _on_strength(self, value: int) -> None:
        knob = TECHNIQUES[self.technique.currentText()]
        self.strength_label.setText(knob.text(value))
        can_act = knob.technique is Technique.QUANTIZE and value == QuantizeParams.ACTIVATION_BITS
        self.activations.setEnabled(can_act)
        self.calibration.setEnabled(can_act)

    def current_spec_params(self) -> tuple[str, dict]:
        knob = TECHNIQUES[self.technique.currentText()]
        params: dict[str, Any] = dict(knob.fixed)
        v = self.strength.value()
        if knob.param is not None:
            params[knob.param] = knob.value(v)
        if knob.technique is Technique.QUANTIZE:
            params["granularity"] = self.granularity.currentText()
            if self.activations.isEnabled() and self.activations.isChecked():
                params |= {"activations": True, "act_calibration": self.calibration.currentText()}
        return str(knob.technique), params

    def _select(self, selector: str) -> None:
        if self.state.profile is not None:
            self.state.select_many(select_layers(selector, self.state.profile))

    def _usable(self) -> set[str]:
        """Layers with a weight to compress, once per profile."""
        p = self.state.profile
        if p is None:
            return set()
        if self._usable_for is not p:
            self._usable_ids, self._usable_for = set(select_layers("all", p)), p
        return self._usable_ids

    def _on_selection(self, _lid: str) -> None:
        ids = self.state.selected_set
        usable = self._usable()
        n_ok = sum(1 for i in ids if i in usable)
        shown = html.escape(", ".join(ids[:4])) + (f" and {len(ids) - 4} more" if len(ids) > 4 else "")
        self.selection_label.setText(
            "No layer selected (click the table, graph or roofline; Ctrl+click adds)." if not ids else
            f"<b>{len(ids)} selected</b>: {shown}" + ("" if n_ok == len(ids) else
                                                     f" — {len(ids) - n_ok} without a weight to compress will be skipped"))
        p = self.state.profile
        on_meta = p is not None and p.summary.device == "meta"
        self.apply_btn.setEnabled(bool(n_ok) and not self.state.busy and not on_meta)
        self.apply_btn.setToolTip("The model is on the meta device: its weights have no values to compress. The estimate "
                                  "below still holds; profile it on cpu to apply." if on_meta else "")

    def _on_busy(self, busy: bool) -> None:
        self._on_selection(self.state.selected)
        for w in (self.undo_btn, self.clear_btn, self.load_btn):
            w.setEnabled(not busy)
        self.undo_btn.setEnabled(not busy and self.state.can_undo())

    def prospective_plan(self) -> CompressionPlan | None:
        """The plan Apply would run now: the current plan plus the selection with this technique."""
        p = self.state.profile
        if p is None:
            return None
        usable = self._usable()
        ids = [i for i in self.state.selected_set if i in usable]
        if not ids:
            return None
        tech, params = self.current_spec_params()
        old: list[LayerSpec] = list(self.state.plan.specs) if self.state.plan is not None else []
        return CompressionPlan(tuple(old + [LayerSpec(i, tech, params) for i in ids]), model=p.model.name)

    def _show_estimate(self, gen: int, text: str) -> None:
        if gen == self._estimate_gen:  # a newer selection's estimate supersedes this one
            self.estimate.setText(text)

    def update_estimate(self) -> None:
        """Instant static estimate of Apply (size, FLOPs, roof bound) for the selection; for a big
        selection it is computed in a worker thread and shown when ready."""
        p, plan = self.state.profile, self.prospective_plan()
        self._estimate_gen += 1
        if p is None or plan is None:
            self.estimate.setText("")
            return
        chosen = frozenset(self.state.selected_set)
        if len(chosen) <= 300:
            self.estimate.setText(estimate_html(p, plan, chosen))
            return
        gen = self._estimate_gen
        self.estimate.setText(f"<b>Estimate</b> for {len(chosen):,} layers…")
        worker = create_worker(estimate_html, p, plan, chosen, _start_thread=False)
        worker.returned.connect(functools.partial(self._show_estimate, gen))
        worker.finished.connect(functools.partial(self._workers.discard, worker))
        self._workers.add(worker)  # keep a reference until it is done
        worker.start()

    # ------------------------------------------------------------------ plan
    def apply_to_selection(self) -> None:
        plan = self.prospective_plan()
        if plan is not None:
            self.controller.compress(plan, ort_int8=self.ort.isChecked())

    def apply_plan(self, plan: CompressionPlan) -> None:
        self.controller.compress(plan, ort_int8=self.ort.isChecked())

    def clear_plan(self) -> None:
        if self.state.plan is not None:
            self.state.set_compression(None, None)

    def save_plan(self) -> None:
        if self.state.plan is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save plan", f"{self.state.plan.model or 'plan'}.plan.json", "JSON (*.json)")
        if path:
            save_text(self, path, self.state.plan.to_json(), "plan", self.controller.show_dialogs)

    def load_plan(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load plan", "", "JSON (*.json)")
        if path:
            self.load_plan_file(path)

    def load_plan_file(self, path: str) -> None:
        try:
            plan = CompressionPlan.load(path)
        except LayerScopeError as exc:
            self._error(str(exc))
            return
        self.apply_plan(plan)

    def export(self, kind: str) -> None:
        text = self.export_text(kind)
        if text is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export config", f"{kind}-config.json", "JSON (*.json)")
        if path:
            save_text(self, path, text, "config", self.controller.show_dialogs)

    def export_text(self, kind: str) -> str | None:
        out = self.state.compression
        if out is None:
            self._error("Apply a plan first.")
            return None
        text, error = config_text(kind, out, self.state.profile)
        if error:
            self._error(error)
        return text

    def _error(self, msg: str) -> None:
        if self.controller.show_dialogs:
            QMessageBox.warning(self, "LayerScope", msg)
        self.controller.failed.emit(msg)

    # ------------------------------------------------------------------ results
    def _on_plan(self, plan) -> None:
        self.plan_list.clear()
        for k, s in enumerate(plan.specs if plan is not None else ()):
            params = ", ".join(f"{a}={b}" for a, b in s.params.items())
            text = f"{k}. {s.select} → {s.technique}({params})"
            self.plan_list.addItem(text)
            self.plan_list.item(self.plan_list.count() - 1).setToolTip(text)
        for w in (self.save_btn, self.export_btn, self.clear_btn):
            w.setEnabled(plan is not None)
        self.undo_btn.setEnabled(self.state.can_undo() and not self.state.busy)

    def _on_compression(self, res: CompressResult | None) -> None:
        if res is None:
            self.summary.setText("No plan applied: every view shows the original model.")
            return
        self.summary.setText(summary_html(res))
