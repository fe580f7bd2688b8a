"""File → Open model: a zoo model, a file.py:factory or a .pt2, with input shape, dtype, runs and
the roofline target."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtWidgets import QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLineEdit, QPushButton, QSpinBox, QWidget

from layerscope.profiler import ZOO, device_profile_names
from layerscope.profiler.jobs import ModelRequest


class OpenModelDialog(QDialog):
    def __init__(self, parent: QWidget | None = None, current: ModelRequest | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open model")
        self.setMinimumWidth(680)  # long paths (path/to/file.py:factory) stay readable
        cur = self.current = current or ModelRequest()
        self.model = QComboBox(editable=True)
        self.model.addItems(list(ZOO))
        self.model.setCurrentText(cur.model or "resnet18")
        line = self.model.lineEdit()
        if line is not None:  # an editable combo box has one
            line.setPlaceholderText("zoo name, path/to/file.py:factory or model.pt2")
        self.model.setMinimumContentsLength(48)
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model.currentTextChanged.connect(self.model.setToolTip)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.model, 1)
        row.addWidget(browse)
        self.factory = QLineEdit(placeholderText="factory function name (for .py files)")
        self.input_shape = QLineEdit(cur.input_shape or "", placeholderText="default: the model's example inputs, e.g. 1,3,224,224")
        self.submodule = QLineEdit(cur.submodule or "", placeholderText="optional: profile one part, e.g. backbone or model.decoder")
        self.submodule.setToolTip("Work on one named submodule, fed the inputs a forward of the whole model gives it: a "
                                  "detection model's backbone and head without the pre- and post-processing tracing cannot take.")
        self.static = QCheckBox("Static profile: shapes, FLOPs and bytes, nothing timed (any model that runs; fast)")
        self.static.setChecked(cur.static)
        self.dtype = QComboBox()
        self.dtype.addItems(["(model's own)", "float32", "bfloat16", "float16"])
        self.runs = QSpinBox(minimum=1, maximum=1000, value=cur.runs)
        self.hardware = QComboBox()
        self.hardware.addItem("This machine (calibrated)", "this")
        for name in device_profile_names():
            self.hardware.addItem(name, name)
        self.trust = QCheckBox("Trust this file (a .pt2 may then run code it carries while loading)")
        self.trust.setChecked(cur.trust_file)
        self.trust.setToolTip("LayerScope opens .pt2 files without running code from them and refuses files that ask to. "
                              "Tick only for files from a source you trust. A .py factory always runs: it is code.")
        form = QFormLayout(self)
        form.addRow("Model", row)
        form.addRow("Factory", self.factory)
        form.addRow("Input shape", self.input_shape)
        form.addRow("Submodule", self.submodule)
        form.addRow("dtype", self.dtype)
        form.addRow("Timed runs", self.runs)
        form.addRow("Roofline target", self.hardware)
        form.addRow("", self.static)
        form.addRow("", self.trust)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model file", str(Path.cwd()), "Models (*.py *.pt2)")
        if path:
            self.model.setCurrentText(path)

    def request(self) -> ModelRequest:
        spec = self.model.currentText().strip()
        if spec.endswith(".py") and self.factory.text().strip():
            spec = f"{spec}:{self.factory.text().strip()}"
        dtype = self.dtype.currentText()
        return dataclasses.replace(  # what the dialog does not show (warm-up, device, threads, capture) carries over
            self.current,
            model=spec or None,
            input_shape=self.input_shape.text().strip() or None,
            dtype=None if dtype.startswith("(") else dtype,
            runs=self.runs.value(),
            hardware=self.hardware.currentData(),
            trust_file=self.trust.isChecked(),
            submodule=self.submodule.text().strip() or None,
            static=self.static.isChecked(),
        )
