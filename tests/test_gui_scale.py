"""The app survives real use: no leaking Qt binding, no stale marks, a progress window that stays up,
a Cancel that stops within half a second, search, totals, and a 10,000-layer profile that every view
takes without reading it row by row on the GUI thread."""

import itertools
import sys
import threading

import pytest
from gui_helpers import profile
from PySide6.QtCore import Qt

from layerscope.app.controller import prepare_views
from layerscope.app.main_window import MainWindow
from layerscope.app.qtcheck import check_qt_binding, none_is_immortal
from layerscope.app.state import BIG_MODEL_LAYERS
from layerscope.profiler import Cancelled, LayerScopeError, drive, load_device_profile, load_model, profile_model
from layerscope.profiler.jobs import ModelRequest
from layerscope.profiler.progress import cancellable, checkpoint


@pytest.mark.skipif(none_is_immortal(), reason="None is immortal on this Python: a leak cannot crash it")
def test_pan_zoom_with_labels_keeps_references_to_none(qtbot, window):
    """PySide6 6.12.0 on Python 3.11 lost one reference to None per void Qt call and aborted the
    app within seconds of panning (none_dealloc)."""
    check_qt_binding()  # first: on a leaking binding this fails cleanly instead of aborting mid-test
    profile(qtbot, window, model="resnet18")
    vb = window.graph.plot.getViewBox()
    assert window.graph.labelled  # labels are on: each frame re-points dozens of TextItems
    before = sys.getrefcount(None)
    for k in range(60):
        vb.translateBy(y=-3 if k % 2 else 3)
        vb.scaleBy((0.9, 0.9) if k % 4 < 2 else (1 / 0.9, 1 / 0.9))
        window.graph._update_labels()
        qtbot.wait(1)
    lost = before - sys.getrefcount(None)
    assert lost < 500, f"{lost} references to None lost in 60 pan/zoom frames: a leaking Qt binding"


def test_new_model_drops_the_old_selection_marks(qtbot, window):
    profile(qtbot, window, model="tiny_cnn")
    window.state.select("conv2")
    assert window.roofline.selected_layer() == "conv2" and window.graph.selected_node() == "conv2"
    profile(qtbot, window, model="digits_cnn")
    assert window.state.selected == ""
    assert window.roofline.selected_layers() == [] and window.graph.selected_nodes() == []


class _CountingEvent(threading.Event):
    """A Cancel event that counts how often the work looks at it once it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.checks_after_set = 0

    def is_set(self) -> bool:
        value = super().is_set()
        self.checks_after_set += value
        return value


def test_progress_window_stays_up_across_stages_and_cancel_stops_fast(qtbot):
    """Deterministic under any load: Cancel's speed is counted in checks of the Cancel event (the job
    must stop at the first check after Cancel: one node of work), and its delay is read on a clock
    the test owns (each reading one second later) instead of the wall clock of a busy machine."""
    win = MainWindow(show_dialogs=True)
    qtbot.addWidget(win)
    win.show()
    stopped = []
    win.controller.stopped.connect(stopped.append)
    profile(qtbot, win, model="tiny_cnn")  # a job that ends by itself closes its window: not a Cancel
    assert not stopped and "Cancelled" not in win.statusBar().currentMessage()
    seen = []
    events: list[_CountingEvent] = []
    win.controller.new_event = lambda: events.append(_CountingEvent()) or events[-1]
    ticks = itertools.count()
    win.controller.clock = lambda: float(next(ticks))
    win.profile(ModelRequest(model="resnet18", runs=400, warmup=1, hardware="raspberry-pi-5"))
    jp = win.controller.window
    assert jp is not None and jp.isVisible()
    win.controller.worker.yielded.connect(lambda p: seen.append((p.stage, jp.isVisible(), jp.fraction)))
    qtbot.waitUntil(lambda: any(s == "timing" for s, _, _ in seen), timeout=120_000)
    stages = list(dict.fromkeys(s for s, _, _ in seen))
    assert len(stages) >= 2 and all(v for _, v, _ in seen)  # one window, up through every stage
    fractions = [f for _, _, f in seen]
    assert fractions == sorted(fractions) and 0 < fractions[-1] < 1  # overall progress never goes back
    assert "Stage" in jp.detail.text() and "elapsed" in jp.eta.text()
    jp.cancel_btn.click()
    assert "Cancelling" in jp.detail.text() and not jp.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: win.controller.worker is None, timeout=120_000)
    assert events[-1].checks_after_set == 1  # the first check after Cancel stopped the job (400 runs of 60 nodes were left)
    assert stopped == [1.0]  # the delay, read on the injected clock, reached the status bar
    assert win.state.profile.model.name == "tiny_cnn" and "Cancelled: the work stopped 1.00 s" in win.statusBar().currentMessage()


def test_checkpoint_stops_work_inside_a_long_step():
    """One timed run of a big model is one step between yields; Cancel must not wait for it."""
    import threading

    m = load_model("resnet18")
    work = profile_model(m, load_device_profile("raspberry-pi-5"), runs=50, warmup=0)
    event = threading.Event()
    with cancellable(event):
        next(work)
        event.set()
        with pytest.raises(Cancelled):
            drive(work)
    checkpoint()  # outside the block nothing is cancelled


def test_search_finds_and_centres_a_layer_or_module(qtbot, window):
    profile(qtbot, window, model="resnet18")
    g = window.graph
    assert g.find_layer("layer3.1.conv2") and window.state.selected == "layer3.1.conv2"
    (x0, x1), (y0, y1) = g.plot.getViewBox().viewRange()
    x, y = g.node_pos["layer3.1.conv2"]
    assert x0 <= x <= x1 and y0 <= y <= y1
    assert g.find_layer("LAYER4.0.DOWNSAMPLE.0")  # case-insensitive, substring
    assert window.state.selected == "layer4.0.downsample.0"
    assert g.find_layer("layer2")  # a module: all its layers, slowest first
    assert all(i.startswith("layer2.") for i in window.state.selected_set) and len(window.state.selected_set) > 5
    assert not g.find_layer("no-such-layer") and "no layer or module matches" in g.info.text()


def test_module_nodes_print_time_and_share(qtbot, window):
    p = profile(qtbot, window, model="resnet18")
    window.graph.depth_box.setCurrentIndex(window.graph.depth_box.findData(1))
    t = p.module_totals("layer1")
    labels = [lab.toPlainText() for lab in window.graph.labels if lab.isVisible()]
    assert any("layer1" in s and f"{t.layers} layers" in s and "ms" in s and "%" in s for s in labels), labels


def test_totals_view_sums_by_type_and_module_and_links_selection(qtbot, window):
    p = profile(qtbot, window, model="resnet18")
    tv = window.totals_view
    by_type = {t.path: t for t in tv.model.totals}
    convs = [r for r in p.rows() if r.layer.type_name == "Conv2d"]
    assert by_type["Conv2d"].layers == len(convs) == 20
    assert by_type["Conv2d"].latency_ms == pytest.approx(sum(r.timing.latency_ms for r in convs))
    assert sum(t.latency_share for t in tv.model.totals) == pytest.approx(1.0)
    tv.select_group("Conv2d")
    assert set(window.state.selected_set) == {r.layer.id for r in convs}
    tv.by.setCurrentIndex(tv.by.findText("Module at depth 1"))
    groups = {t.path for t in tv.model.totals}
    assert {"layer1", "layer2", "layer3", "layer4", "conv1", "fc"} <= groups
    assert tv.model.totals[0].latency_ms >= tv.model.totals[-1].latency_ms  # slowest first
    window.state.select("layer3.0.conv1")
    rows = tv.view.selectionModel().selectedRows()
    assert rows and tv.model.data(rows[0], Qt.ItemDataRole.UserRole) == "layer3"
    tv.view.sortByColumn(6, Qt.SortOrder.DescendingOrder)  # by params
    params = [t.params for t in tv.model.totals]
    assert params == sorted(params, reverse=True)
    assert tv.bar_groups and tv.bar_groups[0] == max(tv.model.totals, key=lambda t: t.latency_ms).path


def test_totals_by_in_the_core(tiny_profile):
    p = tiny_profile
    by_type = p.totals_by("type")
    assert sum(t.layers for t in by_type) == len(p.graph)
    assert sum(t.params for t in by_type) == sum(m.params for m in p.metrics.values())
    by_mod = p.totals_by("module", 1)
    assert sum(t.layers for t in by_mod) == len(p.graph)
    with pytest.raises(LayerScopeError):
        p.totals_by("colour")
    with pytest.raises(LayerScopeError):
        p.totals_by("module", 0)


def test_table_sorts_filters_and_keeps_the_selection(qtbot, window):
    p = profile(qtbot, window, model="resnet18")
    t = window.table
    window.state.select_many(["layer1.0.conv1", "fc"])
    t.view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    ids = [t.model.layer_at(r) for r in range(t.model.rowCount())]
    assert ids == sorted(ids, key=str.lower)
    selected = {t.model.layer_at(i.row()) for i in t.view.selectionModel().selectedRows()}
    assert selected == {"layer1.0.conv1", "fc"}  # the rows moved; the selection followed them
    t.filter.setText("downsample")
    assert 0 < t.model.rowCount() < len(p.graph)
    assert all("downsample" in t.model.layer_at(r) for r in range(t.model.rowCount()))
    t.filter.setText("memory-bound")  # the bound column is searchable too
    assert all(p.roofline[t.model.layer_at(r)].bound.value == "memory-bound" for r in range(t.model.rowCount()))
    t.filter.clear()
    assert t.model.rowCount() == len(p.graph)


BIG = '''
import torch
from torch import nn

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.act, self.norm = nn.Linear(8, 8), nn.ReLU(), nn.LayerNorm(8)

    def forward(self, x):
        return x + self.norm(self.act(self.fc(x)))

def build():
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Sequential(*[Block() for _ in range(25)]) for _ in range(32)]), (torch.randn(1, 8),)
'''


def test_a_big_model_fills_every_view_off_the_gui_thread(qtbot, window, tmp_path):
    """3,200 layers (above the big-model threshold): layout in a worker, views fill turn by turn."""
    f = tmp_path / "big.py"
    f.write_text(BIG)
    p = drive(profile_model(load_model(f"{f}:build"), load_device_profile("raspberry-pi-5"), runs=1, warmup=0))
    assert len(p.graph) > BIG_MODEL_LAYERS
    drive(prepare_views(p))
    window.state.set_profile(p)
    assert window.state.pending > 0 or window.graph.busy()  # queued, not done in the emit
    qtbot.waitUntil(lambda: not window.graph.busy() and not window.state.pending, timeout=30_000)
    assert window.table.model.rowCount() == len(p.graph) == len(window.graph.nodes)
    assert len(window.roofline.ids) > 0 and window.totals_view.model.rowCount() > 0
    assert 0 < len(window.graph.labelled) <= 60  # level of detail: the slowest nodes in view get names
    window.compression.pick_memory.click()
    qtbot.waitUntil(lambda: not window.state.pending, timeout=10_000)
    n = len(window.state.selected_set)
    assert n > 100 and len(window.table.view.selectionModel().selectedRows()) == n
    window.graph.depth_box.setCurrentIndex(window.graph.depth_box.findData(1))
    qtbot.waitUntil(lambda: not window.graph.busy(), timeout=30_000)
    assert len(window.graph.nodes) == 32  # one node per top-level module


def test_compress_panel_estimates_at_once(qtbot, window):
    profile(qtbot, window, model="tiny_cnn")
    panel = window.compression
    assert panel.estimate.text() == ""
    window.state.select_many(["conv2", "fc"])
    panel.technique.setCurrentText("Quantize weights (int)")
    panel.strength.setValue(8)
    eight = panel.estimate.text()
    assert "Estimate" in eight and "2 layer(s)" in eight and "FLOPs" in eight
    panel.strength.setValue(4)
    assert panel.estimate.text() != eight  # follows the slider without an Apply
    panel.technique.setCurrentText("Prune channels (structured)")
    assert "would change the shape of the model's output" in panel.estimate.text()  # the plan error, before Apply
    window.state.select("conv2")
    assert "channel pruning" in panel.estimate.text()  # says where it is approximate


def test_latency_change_within_the_spread_is_no_change():
    from layerscope.profiler.timing import LayerTiming, within_noise

    def t(median, p25, p75):
        return LayerTiming(median, p25, p75, median, 0, 0)

    assert within_noise(t(1.00, 0.90, 1.10), t(1.05, 0.95, 1.15))
    assert not within_noise(t(1.00, 0.98, 1.02), t(0.50, 0.49, 0.51))
    assert not within_noise(None, t(1.0, 1.0, 1.0))


def test_cancel_while_tracing_does_not_fall_back_to_export(monkeypatch):
    """A Cancel inside torch.fx tracing once read as 'fx cannot trace this' and started a full
    torch.export of the model (82 s on a 10,000-layer model) before stopping."""
    import threading

    import torch

    from layerscope.profiler.capture import capture

    def no_export(*_a, **_k):
        raise AssertionError("torch.export ran after a Cancel")

    monkeypatch.setattr(torch.export, "export", no_export)
    m = load_model("resnet18")
    event = threading.Event()
    event.set()
    with cancellable(event), pytest.raises(Cancelled):
        capture(m.module, m.inputs)
