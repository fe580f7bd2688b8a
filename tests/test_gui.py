import json

import pytest
from gui_helpers import FAST, profile
from PySide6.QtCore import Qt

from layerscope.app.main_window import MainWindow
from layerscope.profiler.jobs import ModelRequest


def test_click_table_row_selects_layer_in_graph_and_roofline(qtbot, window):
    p = profile(qtbot, window, model="resnet18")
    assert window.state.profile is p and window.table.model.rowCount() == len(p.graph)
    target = "layer2.0.conv2"
    row = window.table.model.row_of(target)
    window.table.view.scrollTo(window.table.model.index(row, 0))
    rect = window.table.view.visualRect(window.table.model.index(row, 0))
    qtbot.mouseClick(window.table.view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.state.selected == target
    assert window.graph.selected_node() == target
    assert window.roofline.selected_layer() == target
    assert target in window.details.toPlainText()


def test_roofline_and_graph_clicks_select_everywhere(qtbot, window):
    p = profile(qtbot, window, model="tiny_cnn")
    item, spot = window.roofline.spot_of("conv2")
    item.sigClicked.emit(item, [spot], None)
    assert window.state.selected == "conv2"
    sel = window.table.view.selectionModel().selectedRows()
    assert sel and window.table.model.data(sel[0], Qt.ItemDataRole.UserRole) == "conv2"
    j = window.graph.nodes.index("fc")
    window.graph.scatter.sigClicked.emit(window.graph.scatter, [window.graph.scatter.points()[j]], None)
    assert window.state.selected == "fc" and window.roofline.selected_layer() == "fc"
    assert len(p.graph) == window.table.model.rowCount()


def test_collapse_modules_in_graph(qtbot, window):
    profile(qtbot, window, model="resnet18")
    window.graph.depth_box.setCurrentIndex(window.graph.depth_box.findData(1))
    assert "layer1" in window.graph.nodes and "layer1.0.conv1" not in window.graph.nodes
    window.state.select("layer1.0.conv1")
    assert window.graph.selected_node() == "layer1"  # the collapsed module stands for it
    window.graph.toggle_module("layer1")
    assert "layer1.0" in window.graph.nodes
    window.graph.expand_all()
    assert "layer1.0.conv1" in window.graph.nodes


def test_error_keeps_current_profile(qtbot, window):
    p = profile(qtbot, window, model="tiny_cnn")
    with qtbot.waitSignal(window.controller.failed, timeout=60_000) as blocker:
        window.profile(ModelRequest(model="resnet51", **FAST))
    assert "Unknown model 'resnet51'" in blocker.args[0]
    qtbot.waitUntil(lambda: window.controller.worker is None)
    assert window.state.profile is p


def test_cancel_keeps_current_profile(qtbot, window):
    p = profile(qtbot, window, model="tiny_cnn")
    with qtbot.waitSignal(window.controller.cancelled, timeout=120_000):
        window.profile(ModelRequest(model="resnet18", runs=500, warmup=1, hardware="raspberry-pi-5"))
        qtbot.wait(200)
        window.controller.cancel()
    qtbot.waitUntil(lambda: window.controller.worker is None, timeout=60_000)
    assert window.state.profile is p


@pytest.mark.toolchain
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning")
def test_compiled_ops_view_links_ops_and_layers(qtbot, window):
    profile(qtbot, window, model="tiny_cnn")
    with qtbot.waitSignal(window.controller.onnxFinished, timeout=120_000) as blocker:
        window.compiled.level.setCurrentText("all")
        window.compiled.run_btn.click()
    qtbot.waitUntil(lambda: window.controller.worker is None)
    onnx = blocker.args[0]
    assert window.state.onnx is onnx and window.compiled.ops_model.rowCount() == len(onnx.ops)
    fused = next(o for o in onnx.ops if {"conv1", "bn1"} <= set(o.layer_ids))
    window.compiled.select_op(fused.name)  # an op selects all its source layers everywhere
    assert set(window.state.selected_set) == set(fused.layer_ids)
    assert set(window.graph.selected_nodes()) == set(fused.layer_ids)
    assert {"conv1", "bn1"} <= set(window.roofline.selected_layers())
    rows = window.table.view.selectionModel().selectedRows()
    assert {window.table.model.data(r, Qt.ItemDataRole.UserRole) for r in rows} == set(fused.layer_ids)
    window.state.select("conv2")  # a layer lists its compiled ops
    assert window.compiled.ops_for_selected_layer() and "conv2" in window.compiled.layer_ops.text()
    assert window.compiled.cmp_model.rowCount() == len(window.state.profile.graph)  # eager vs ORT per layer


def _apply(qtbot, win):
    assert win.compression.apply_btn.isEnabled() and win.controller.worker is None
    done, failed = [], []
    win.controller.compressFinished.connect(lambda plan, out: done.append(out))
    win.controller.failed.connect(failed.append)
    win.compression.apply_btn.click()
    qtbot.waitUntil(lambda: bool(done or failed) and win.controller.worker is None, timeout=120_000)
    assert not failed, failed
    return done[0]


def test_compress_sliders_read_the_technique_specs(window):
    from layerscope.app.compress_panel import TECHNIQUES
    from layerscope.profiler.compression.specs import default, limits, parse_params
    panel = window.compression
    for label, knob in TECHNIQUES.items():
        panel.technique.setCurrentText(label)
        s = panel.strength
        if knob.param is None:
            assert not s.isEnabled()
            parse_params(*panel.current_spec_params())
            continue
        lim, scale = limits(knob.technique, knob.param), 100 if knob.percent else 1
        assert s.value() == round(default(knob.technique, knob.param) * scale)  # starts at the spec's default
        for end in (s.minimum(), s.maximum()):  # both ends of the slider are valid parameters…
            s.setValue(end)
            assert knob.value(end) in lim
            parse_params(*panel.current_spec_params())
        # …and one step beyond either end is not
        assert knob.value(s.minimum() - 1) not in lim and knob.value(s.maximum() + 1) not in lim
    panel.technique.setCurrentText("Quantize weights (int)")
    panel.activations.setChecked(True)
    panel.strength.setValue(4)  # the core's rule: int8 activations need 8-bit weights
    assert not panel.activations.isEnabled() and "activations" not in panel.current_spec_params()[1]
    panel.strength.setValue(8)
    assert panel.current_spec_params()[1]["activations"] is True


def test_compress_selection_shows_before_after_and_undo(qtbot, window, tmp_path):
    p = profile(qtbot, window, model="digits_cnn")
    panel = window.compression
    assert not panel.apply_btn.isEnabled()  # nothing selected yet
    panel.topk.setValue(2)
    panel.pick_top.click()  # the 2 slowest compressible layers (which two depends on this run's timing)
    slowest = window.state.selected_set
    assert len(slowest) == 2 and window.roofline.selected_layers()
    panel.technique.setCurrentText("Quantize weights (int)")
    panel.strength.setValue(8)
    panel.activations.setChecked(True)
    out = _apply(qtbot, window)
    assert window.state.compression is out and len(out.weights) == 2
    headers = [window.table.model.headerData(c, Qt.Orientation.Horizontal) for c in range(window.table.model.columnCount())]
    assert "Δ latency ms" in headers and "Weights after" in headers
    assert len(window.roofline.after_ids) == 2  # both dots have a compressed twin
    assert "Top-1" in panel.summary.text() and "compressed" in window.totals.text()
    # second step: structured pruning of conv2 on top of the plan, then Undo returns the first outcome
    window.state.select("conv2")
    panel.technique.setCurrentText("Prune channels (structured)")
    panel.strength.setValue(50)
    out2 = _apply(qtbot, window)
    assert out2.flops_after < p.total_flops and panel.plan_list.count() == 3
    assert "conv2 → prune_channels(amount=0.5)" in panel.plan_list.item(2).text()
    panel.undo_btn.click()
    assert window.state.compression is out and panel.plan_list.count() == 2
    assert '"module_name_configs"' in panel.export_text("coreml") and all(f'"{lid}"' in panel.export_text("torch.ao") for lid in slowest)
    torchao = json.loads(panel.export_text("torchao"))  # each layer is configured, or named with why torchao cannot take it
    assert all(lid in torchao["fqn_to_config"] or any(line.startswith(lid) for line in torchao["cannot_express"]) for lid in slowest)
    nncf = json.loads(panel.export_text("nncf"))  # int8 weights and activations: one nncf.quantize over exactly these layers
    assert [(s["function"], sorted(s["layers"])) for s in nncf["steps"]] == [("nncf.quantize", sorted(slowest))]
    plan_file = tmp_path / "p.json"
    plan_file.write_text(window.state.plan.to_json())
    panel.undo_btn.click()
    assert window.state.compression is None and window.table.model.columnCount() < len(headers)
    with qtbot.waitSignal(window.controller.compressFinished, timeout=120_000):
        panel.load_plan_file(str(plan_file))  # load plan = apply it
    qtbot.waitUntil(lambda: window.controller.worker is None)
    assert len(window.state.plan.specs) == 2 and window.state.compression is not out


def test_compress_bad_plan_file_shows_error_and_keeps_work(qtbot, window, tmp_path):
    profile(qtbot, window, model="tiny_cnn")
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "specs": [{"select": "bn1", "technique": "quantize"}]}')
    with qtbot.waitSignal(window.controller.failed, timeout=120_000) as blocker:
        window.compression.load_plan_file(str(bad))
    qtbot.waitUntil(lambda: window.controller.worker is None)
    assert "'bn1' (BatchNorm2d)" in blocker.args[0]
    assert window.state.profile is not None and window.state.compression is None


RESIDUAL = '''
import torch
from torch import nn

class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.branch = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        x = self.stem(x)
        y = self.branch(x) * 100
        return self.head(torch.relu(y + x))

def build():
    torch.manual_seed(0)
    return Residual(), (torch.randn(2, 3, 16, 16),)
'''


def test_ranges_view_flags_the_add_and_follows_selection(qtbot, window, tmp_path):
    f = tmp_path / "residual.py"
    f.write_text(RESIDUAL)
    profile(qtbot, window, model=f"{f}:build")
    window.state.select_many(["stem", "branch"])
    window.compression.technique.setCurrentText("Quantize weights (int)")
    window.compression.strength.setValue(8)
    window.compression.activations.setChecked(True)
    _apply(qtbot, window)
    view = window.ranges
    cmp, diags = window.state.analysis
    assert diags[0].kind.value == "range-mismatch" and view.diag_list.count() == len(diags)
    add = diags[0].layer_ids[0]
    view._on_diag(view.diag_list.item(0))
    assert window.state.selected == add and set(window.state.selected_set) == set(diags[0].layer_ids)
    xs, ys = view.ref_curve.getData()
    assert len(xs) == len(ys) + 1 and ys.sum() > 0  # the add's histogram is drawn
    assert "input <b>" in view.caption.text() and view.cand_curve.getData()[1].sum() > 0
    view.select_bar(0)  # clicking a bar of the SQNR-vs-depth chart selects that layer everywhere
    assert window.state.selected == view.positions[0] == "stem" and window.roofline.selected_layer() == "stem"
    window.compression.undo_btn.click()
    assert window.state.analysis is None and view.diag_list.count() == 0


def test_a_bad_saved_profile_keeps_the_current_one(qtbot, window, tmp_path):
    p = profile(qtbot, window, model="tiny_cnn")
    good = json.loads(p.to_json())
    bad_files = {"not_utf8.json": b"\xff\xfe{", "deep.json": b"[" * 50_000 + b"]" * 50_000}
    good["timings"][good["graph"]["layers"][0]["id"]]["latency_ms"] = float("1e308") * 10  # inf: shares would break
    bad_files["inconsistent.json"] = json.dumps(good).replace("Infinity", "1e999").encode()
    for name, data in bad_files.items():
        (tmp_path / name).write_bytes(data)
        assert window.load_profile(str(tmp_path / name)) is False
        assert name in window.last_error and window.state.profile is p


def test_refused_model_file_can_be_trusted_from_the_dialog(qtbot, tmp_path):
    import crafted
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    marker = tmp_path / "marker"
    evil = crafted.pickled_inputs(crafted.base_program(tmp_path / "base.pt2"), tmp_path / "sent_to_me.pt2", marker)
    win = MainWindow(show_dialogs=True)
    qtbot.addWidget(win)
    clicked = []

    def answer() -> None:  # the user reads the warning and decides to trust the file
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(50, answer)
            return
        clicked.append(box.text())
        next(b for b in box.buttons() if b.text().startswith("Trust this file")).click()

    QTimer.singleShot(50, answer)
    with qtbot.waitSignal(win.controller.finished, timeout=120_000):
        win.profile(ModelRequest(model=str(evil), **FAST))
    assert "refused to load" in clicked[0] and marker.exists()
    assert win.state.profile.model.spec == str(evil) and any("--trust-file" in n for n in win.state.profile.model.capture_notes)
    qtbot.waitUntil(lambda: win.controller.worker is None)


def test_a_static_profile_opens_with_flops_shares_and_dots_on_the_roof(qtbot, window):
    p = profile(qtbot, window, model="tiny_cnn", static=True)
    assert p.static and window.table.model.rowCount() == len(p.graph)
    assert "share of FLOPs" in window.totals_view.caption.text() and "static profile" in window.totals.text()
    assert window.roofline.ids and "every dot sits on its roof" in window.roofline.caption.text()


def test_apply_is_off_for_a_meta_device_profile_and_says_why(qtbot, window):
    """Weights on the meta device have no values: the estimate shows, Apply does not run."""
    p = profile(qtbot, window, model="tiny_cnn", static=True, device="meta")
    assert p.summary.device == "meta"
    window.state.select("conv2")
    panel = window.compression
    assert not panel.apply_btn.isEnabled() and "meta device" in panel.apply_btn.toolTip()
    assert "Estimate" in panel.estimate.text()


def test_the_open_dialog_names_a_submodule_and_keeps_what_it_does_not_show(qtbot):
    from layerscope.app.open_dialog import OpenModelDialog

    dlg = OpenModelDialog(None, ModelRequest("resnet18", warmup=7, threads=1, device="cpu"))
    qtbot.addWidget(dlg)
    dlg.submodule.setText(" layer1 ")
    dlg.static.setChecked(True)
    req = dlg.request()
    assert (req.model, req.submodule, req.static, req.warmup, req.threads) == ("resnet18", "layer1", True, 7, 1)


def test_apply_after_a_static_profile_of_a_submodule(qtbot, window):
    """Apply loads the model again from the profile: a static reference (nothing timed) and a submodule
    (found again in the whole model) both work."""
    from pathlib import Path

    spec = f"{Path(__file__).parent / 'patterns.py'}:tiny_detector"
    p = profile(qtbot, window, model=spec, submodule="head", static=True)
    assert p.static and p.model.submodule == "head"
    window.state.select("cls.0")
    outcome = _apply(qtbot, window)
    assert outcome.size_ratio < 1 and window.state.compression is outcome
    assert all(d.latency_ms_before is None for d in outcome.layers)  # the static reference timed nothing
    assert window.table.model.rowCount() == len(p.graph)


@pytest.mark.slow
def test_sigterm_closes_the_window_without_a_traceback(tmp_path):
    """`kill` (SIGTERM) on the desktop app, in the middle of a profile, cancels the job and quits at once; the
    handler used to run only at exit, inside pyqtgraph's cleanup, and printed a Terminated traceback (seen on the
    packaged app), and Qt 6's quit() was refused by the progress window while the job ran."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "LAYERSCOPE_HISTORY": str(tmp_path / "h.sqlite")}
    proc = subprocess.Popen([sys.executable, "-m", "layerscope", "-v", "gui", "resnet50", "--runs", "300", "--hardware",
                             "raspberry-pi-5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    loaded = threading.Event()

    def read() -> None:  # the job logs "loaded resnet50 ..." once the model is built: then it captures and times
        for line in proc.stderr:
            lines.append(line)
            if "loaded resnet50" in line:
                loaded.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert loaded.wait(120), "".join(lines)[-2000:]
    time.sleep(1.0)  # well inside the profile (300 timed runs of ResNet-50 take minutes)
    assert proc.poll() is None, "".join(lines)[-2000:]
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    reader.join(timeout=10)
    err = "".join(lines)
    assert time.perf_counter() - t0 < 10 and "Traceback" not in err, err[-2000:]
