"""The one app state object: current profile and selected layer. Panels listen to it; panels
never talk to each other. Selecting a layer anywhere selects it everywhere."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from layerscope.profiler import Profile


class AppState(QObject):
    profileChanged = Signal(object)  # Profile | None
    selectionChanged = Signal(str)  # layer id, "" for none
    busyChanged = Signal(bool)

    def __init__(self) -> None:
        super().__init__()
        self.profile: Profile | None = None
        self.selected: str = ""
        self.busy = False

    def set_profile(self, profile: Profile | None) -> None:
        self.profile = profile
        self.selected = ""
        self.profileChanged.emit(profile)

    def select(self, layer_id: str) -> None:
        if layer_id == self.selected:
            return
        if layer_id and (self.profile is None or layer_id not in self.profile.graph):
            return
        self.selected = layer_id
        self.selectionChanged.emit(layer_id)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.busyChanged.emit(busy)
