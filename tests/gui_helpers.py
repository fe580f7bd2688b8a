"""Driving the real main window in GUI tests."""

from layerscope.profiler import Profile
from layerscope.profiler.jobs import ModelRequest

FAST = dict(runs=2, warmup=1, hardware="raspberry-pi-5")


def profile(qtbot, win, **kw) -> Profile:
    """Profile a model through the window's controller and wait until every view has it."""
    with qtbot.waitSignal(win.controller.finished, timeout=120_000) as blocker:
        win.profile(ModelRequest(**{**FAST, **kw}))
    qtbot.waitUntil(lambda: win.controller.worker is None and not win.graph.busy() and not win.state.pending)
    return blocker.args[0]
