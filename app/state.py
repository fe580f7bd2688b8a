"""The one app state object: current profile and selected layer. Panels listen to it; panels
never talk to each other. Selecting a layer anywhere selects it everywhere."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from layerscope.profiler import Profile


class AppState(QObject):
    profileChanged = Signal(object)  # Profile | None
    onnxChanged = Signal(object)  # OnnxProfile | None
    selectionChanged = Signal(str)  # primary layer id, "" for none; ``selected_set`` holds all
    busyChanged = Signal(bool)

    def __init__(self) -> None:
        super().__init__()
        self.profile: Profile | None = None
        self.onnx = None  # OnnxProfile of the current model, when mapped
        self.selected: str = ""
        self.selected_set: tuple[str, ...] = ()
        self.busy = False

    def set_profile(self, profile: Profile | None) -> None:
        self.profile = profile
        self.selected, self.selected_set = "", ()
        self.onnx = None
        self.profileChanged.emit(profile)
        self.onnxChanged.emit(None)

    def set_onnx(self, onnx) -> None:
        self.onnx = onnx
        self.onnxChanged.emit(onnx)

    def select(self, layer_id: str) -> None:
        """Select one layer (clicked in any view)."""
        self.select_many((layer_id,) if layer_id else ())

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
