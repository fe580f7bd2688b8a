"""How long the GUI thread stalls on a 10,000-layer model, action by action.

Builds two 10,000-layer models in code (2,500 blocks of Linear(16,16) + ReLU + LayerNorm + residual
add, flat and nested 50×50), opens each in the real main window (offscreen unless a display is set),
and runs the actions a user does: open, select, sort, filter keystrokes, bulk selection, depth
switch, search, zoom/pan, colour mode, totals. A 10 ms QTimer heartbeat runs throughout; for each
action it prints the longest gap between two beats (the GUI thread was busy that long; target
<= 100 ms). Work on worker threads does not count unless it starves the GUI thread.

    .venv/bin/python bench/gui_scale.py                   # both models
    .venv/bin/python bench/gui_scale.py --model flat --load 2   # with 2 busy background processes
    .venv/bin/python bench/gui_scale.py --shots /tmp/shots      # also save screenshots
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen" if not os.environ.get("DISPLAY") else "xcb")

MODEL_SRC = textwrap.dedent('''
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d=16):
            super().__init__()
            self.fc = nn.Linear(d, d)
            self.act = nn.ReLU()
            self.norm = nn.LayerNorm(d)

        def forward(self, x):
            return x + self.norm(self.act(self.fc(x)))

    class Flat(nn.Module):  # 2,500 blocks x 4 layers
        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(*[Block() for _ in range(2500)])

        def forward(self, x):
            return self.blocks(x)

    class Nested(nn.Module):  # 50 stages of 50 blocks x 4 layers
        def __init__(self):
            super().__init__()
            self.stages = nn.Sequential(*[nn.Sequential(*[Block() for _ in range(50)]) for _ in range(50)])

        def forward(self, x):
            return self.stages(x)

    def flat():
        return Flat(), (torch.randn(1, 16),)

    def nested():
        return Nested(), (torch.randn(1, 16),)
''')


def _burn(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


class Heartbeat:
    """Longest gap between 10 ms timer beats on the GUI thread, and the longest garbage collection."""

    def __init__(self) -> None:
        import gc

        from PySide6.QtCore import QTimer

        self.gc_longest = 0.0
        self._gc_start = 0.0
        gc.callbacks.append(self._gc)

        self.last = time.perf_counter()
        self.longest = 0.0
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._beat)
        self.timer.start()

    def _beat(self) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self.last)
        self.last = now

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_longest = max(self.gc_longest, time.perf_counter() - self._gc_start)

    def reset(self) -> None:
        self.last = time.perf_counter()
        self.longest = 0.0
        self.gc_longest = 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["flat", "nested", "both", "none"], default="both")
    ap.add_argument("--jobs", action="store_true", help="also: GUI stall while ONNX mapping and Apply run on resnet50")
    ap.add_argument("--load", type=int, default=0, help="busy background processes during the run")
    ap.add_argument("--shots", help="folder for screenshots")
    ap.add_argument("--size", default="1500x950", help="window size, e.g. 1366x768")
    ap.add_argument("--events", action="store_true", help="also list each GUI event over 40 ms and its slot (slower)")
    args = ap.parse_args()

    from PySide6.QtCore import QEventLoop, Qt, QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from layerscope.app.main_window import MainWindow
    from layerscope.app.qtcheck import check_qt_binding
    from layerscope.profiler.jobs import ModelRequest

    check_qt_binding()
    long_events: list[str] = []
    beat_ref: list = [None]

    class TracingApp(QApplication):
        def notify(self, obj, ev):
            t = time.perf_counter()
            try:
                return super().notify(obj, ev)
            finally:
                d = time.perf_counter() - t
                if d > 0.015:
                    long_events.append(f"{d * 1000:.0f} ms {ev.type().name} -> {type(obj).__name__} @{(t - beat_ref[0].last) * 1000:+.0f}")

    app = QApplication.instance() or (TracingApp if args.events else QApplication)(sys.argv[:1])  # noqa: F841 - keeps Qt alive
    stop = mp.Event()
    burners = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(args.load)]
    for b in burners:
        b.start()
    folder = Path(tempfile.mkdtemp(prefix="ls-gui-scale-"))
    src = folder / "big10k.py"
    src.write_text(MODEL_SRC)
    shots = Path(args.shots) if args.shots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    w, h = (int(v) for v in args.size.split("x"))
    results: list[tuple[str, str, float, float, float]] = []
    cancel_times: list[tuple[str, str, float]] = []

    def spin(ms: int) -> None:
        """Run the event loop as the app does (QTest.qWait keeps the GIL and starves worker threads)."""
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    def wait(cond, timeout: float = 600.0, settle: float = 0.25) -> None:
        end = time.perf_counter() + timeout
        while not cond():
            if time.perf_counter() > end:
                raise TimeoutError("action did not finish")
            spin(20)
        spin(int(settle * 1000))

    for name in {"both": ["flat", "nested"], "none": []}.get(args.model, [args.model]):
        win = MainWindow(show_dialogs=True)
        win.resize(w, h)
        win.show()
        spin(300)
        beat = Heartbeat()
        beat_ref[0] = beat
        wall: dict[str, float] = {}

        def act(label: str, fn, cond=lambda: True, settle: float = 0.25) -> None:
            graph = win.graph
            beat.reset()
            t0 = time.perf_counter()
            fn()
            wait(lambda: cond() and not graph.busy() and not win.state.pending and win.controller.worker is None, settle=settle)
            results.append((name, label, beat.longest * 1000, time.perf_counter() - t0 - settle, beat.gc_longest * 1000))
            if long_events:
                print(f"  {label}: " + "; ".join(long_events))
                long_events.clear()
            wall[label] = time.perf_counter() - t0

        def shot(tag: str) -> None:
            if shots:
                spin(150)
                win.grab().save(str(shots / f"{name}-{tag}.png"))

        done = []
        win.controller.finished.connect(done.append)
        arrived = []
        win.state.profileChanged.connect(lambda _p: arrived.append(time.perf_counter()))

        beat.reset()
        t0 = time.perf_counter()
        win.profile(ModelRequest(model=f"{src}:{name}", runs=1, warmup=0, hardware="raspberry-pi-5"))
        while not arrived:
            spin(20)
        results.append((name, "profile job (worker; progress window up)", beat.longest * 1000, arrived[0] - t0, beat.gc_longest * 1000))
        if long_events:
            print("  profile job: " + "; ".join(long_events))
            long_events.clear()
        beat.reset()
        t0 = arrived[0]
        wait(lambda: bool(done) and not win.graph.busy() and not win.state.pending and win.controller.worker is None, settle=0.5)
        results.append((name, "show: 10k-layer profile fills every view", beat.longest * 1000, time.perf_counter() - t0 - 0.5,
                        beat.gc_longest * 1000))
        if long_events:
            print("  show: " + "; ".join(long_events))
            long_events.clear()
        p = win.state.profile
        assert p is not None and len(p.graph) == 10_000, len(p.graph) if p else None
        shot("opened")
        ids = p.graph.ids()
        act("select a layer (table row)", lambda: win.table.select_layer_row(ids[5003]))
        act("select another layer (state)", lambda: win.state.select(ids[7777]))
        for col, label in ((2, "sort by latency"), (0, "sort by layer id"), (1, "sort by type"), (5, "sort by bound")):
            act(label, lambda c=col: win.table.view.sortByColumn(c, Qt.SortOrder.DescendingOrder))
        win.table.filter.setFocus()
        act("filter: type 'blocks.12' (9 keystrokes)",
            lambda: [QTest.keyClick(win.table.filter, ch) or spin(30) for ch in ("blocks.12" if name == "flat" else "stages.12")])
        act("filter: clear", lambda: win.table.filter.clear())
        act("bulk select: Memory-bound", win.compression.pick_memory.click)
        act("bulk select: Compute-bound", win.compression.pick_compute.click)
        act("bulk select: Slowest top 5", win.compression.pick_top.click)
        act("search: find and centre a layer", lambda: win.graph.find_layer(ids[4242]))
        shot("zoomed-in")
        act("zoom: fit all", win.graph.fit_all)
        act("colour: latency heat", lambda: win.graph.color_box.setCurrentIndex(1))
        shot("zoomed-out-heat")
        vb = win.graph.plot.getViewBox()
        act("zoom in x4 (wheel-like)", lambda: [vb.scaleBy((0.5, 0.5)), spin(30), vb.scaleBy((0.5, 0.5))])
        act("pan", lambda: [vb.translateBy(y=-(vb.viewRange()[1][1] - vb.viewRange()[1][0]) / 3) or spin(20)
                            for _ in range(5)])
        for k, label in ((1, "depth 1"), (2, "depth 2"), (3, "depth 3"), (0, "all layers")):
            act(f"switch: {label}", lambda k=k: win.graph.depth_box.setCurrentIndex(k))
            if k == 2:
                shot("depth2")
        win.graph.depth_box.setCurrentIndex(0)
        win.totals_dock.raise_()
        act("totals: by module at depth 2", lambda: win.totals_view.by.setCurrentIndex(2))
        act("totals: sort by params", lambda: win.totals_view.view.sortByColumn(6, Qt.SortOrder.DescendingOrder))
        act("totals: by op type", lambda: win.totals_view.by.setCurrentIndex(0))
        shot("totals")
        act("select a group in totals", lambda: win.totals_view.select_group(win.totals_view.model.totals[0].path))
        # Cancel in the middle of profiling the same model again: how long until the work stops
        stopped: list[float] = []
        win.controller.stopped.connect(stopped.append)
        win.profile(ModelRequest(model=f"{src}:{name}", runs=3, warmup=0, hardware="raspberry-pi-5"))
        spin(4000)  # well into capture or timing
        stage = win.controller.window.stage if win.controller.window else "?"
        beat.reset()
        win.controller.cancel()
        wait(lambda: win.controller.worker is None, settle=0.1)
        results.append((name, f"cancel during '{stage}': stall", beat.longest * 1000, stopped[0] if stopped else float("nan"), 0.0))
        cancel_times.append((name, stage, stopped[0] if stopped else float("nan")))
        if long_events:
            print("  cancel: " + "; ".join(long_events))
            long_events.clear()
        beat.timer.stop()
        win.close()
        win.deleteLater()
        spin(100)

    if args.jobs:
        win = MainWindow(show_dialogs=True)
        win.resize(w, h)
        win.show()
        beat = Heartbeat()
        beat_ref[0] = beat
        for label, start in (
            ("profile resnet50 (job)", lambda: win.profile(ModelRequest(model="resnet50", runs=5, warmup=1, hardware="raspberry-pi-5"))),
            ("ONNX Runtime mapping (job)", lambda: win.controller.map_onnx("all", runs=5)),
            ("Apply int8 to memory-bound (job)", lambda: (win.compression.pick_memory.click(), win.compression.apply_to_selection())),
        ):
            beat.reset()
            t0 = time.perf_counter()
            start()
            wait(lambda: win.controller.worker is None and not win.state.pending and not win.graph.busy(), settle=0.3)
            results.append(("resnet50", label, beat.longest * 1000, time.perf_counter() - t0 - 0.3, beat.gc_longest * 1000))
        win.close()

    stop.set()
    print(f"GUI-thread stall per action (longest gap between 10 ms heartbeats), load={args.load} busy processes, "
          f"{os.cpu_count()} CPUs, window {args.size}")
    print(f"{'model':8} {'action':44} {'stall ms':>9} {'gc ms':>6} {'work s':>7}  verdict")
    worst = 0.0
    for model, label, ms, secs, gc_ms in results:
        worst = max(worst, ms)
        print(f"{model:8} {label:44} {ms:9.0f} {gc_ms:6.0f} {secs:7.2f}  {'ok' if ms <= 100 else 'OVER 100 ms'}")
    print(f"worst: {worst:.0f} ms")
    for model, stage, secs in cancel_times:
        print(f"{model}: Cancel during '{stage}' stopped the work {secs:.2f} s later")
    return 0


if __name__ == "__main__":
    sys.exit(main())
