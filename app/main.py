"""Desktop entry point: ``layerscope gui [MODEL]`` or ``layerscope-gui``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys

from PySide6.QtCore import QThreadPool, QTimer
from PySide6.QtWidgets import QApplication

from layerscope.profiler import LayerScopeError
from layerscope.profiler.jobs import ModelRequest

from .main_window import MainWindow, app_icon
from .qtcheck import check_qt_binding


def run_gui(args: argparse.Namespace) -> int:
    check_qt_binding()  # before any widget exists: a leaking binding would abort the process later
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    app.setApplicationName("LayerScope")
    app.setWindowIcon(app_icon())
    win = MainWindow()
    win.controller.history = getattr(args, "history", None)
    win.show()
    _quit_on_terminate(app, win)
    shot: str | None = getattr(args, "screenshot", None)

    def screenshot_and_quit(*_a) -> None:
        def grab() -> None:
            layer = getattr(args, "select", None) or (win.state.profile.ranked(1)[0].layer.id if win.state.profile else "")
            win.state.select(layer)
            QTimer.singleShot(500, lambda: (win.grab().save(str(shot)), app.quit()))

        QTimer.singleShot(300, grab)

    if getattr(args, "sweep", None) is not None:
        if shot:
            win.controller.finished.connect(screenshot_and_quit)
            win.controller.failed.connect(lambda _m: app.exit(1))
        run_id, history = args.sweep, getattr(args, "history", None)
        QTimer.singleShot(0, lambda: win.controller.open_run(run_id, history))
    elif getattr(args, "profile_json", None):
        if shot:
            win.controller.finished.connect(screenshot_and_quit)
            win.controller.failed.connect(lambda _m: app.exit(1))
        path = args.profile_json
        QTimer.singleShot(0, lambda: win.controller.open_profile(path))  # read in the worker, with progress
    else:
        req = ModelRequest.from_args(args)  # every model option, checked before the window opens
        if shot:
            win.controller.finished.connect(screenshot_and_quit)
            win.controller.failed.connect(lambda _m: app.exit(1))
        QTimer.singleShot(0, lambda: win.profile(req))
    code = app.exec()
    QThreadPool.globalInstance().waitForDone(30_000)  # a job cancelled on the way out ends at its next layer
    return code


def _quit_on_terminate(app: QApplication, win: MainWindow) -> None:
    """SIGTERM / SIGHUP cancel the running job (it stops within a layer's time) and quit. Python runs a signal
    handler only when it gets control, which Qt's event loop never gives it: a short timer does, so the handler
    runs within 0.2 s instead of after the loop, where it raised inside pyqtgraph's exit cleanup (a traceback)."""
    def stop(*_a) -> None:
        win.controller.cancel()
        app.exit(0)  # not quit(): Qt 6 asks every window first, and the progress window refuses while a job runs

    for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)):
        if sig is not None:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, stop)
    tick = QTimer(app)
    tick.timeout.connect(lambda: None)
    tick.start(200)


def add_gui_history_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sweep", type=int, metavar="RUN_ID", help="open a recorded sweep's trade-offs (and its reference profile)")
    p.add_argument("--history", metavar="URL", help="the history database --sweep reads (default: $LAYERSCOPE_HISTORY or "
                                                    "~/.local/share/layerscope/history.sqlite)")


def build_parser() -> argparse.ArgumentParser:
    """``layerscope-gui``'s own arguments: the model options of the core's request, plus the app's."""
    p = argparse.ArgumentParser(prog="layerscope-gui", description="LayerScope desktop app: find and compress bottleneck layers.")
    ModelRequest.add_arguments(p, static=True)
    p.add_argument("--profile", dest="profile_json", help="open a saved profile JSON instead of profiling")
    add_gui_history_arguments(p)
    p.add_argument("--screenshot", help=argparse.SUPPRESS)  # used by docs/tests: save a PNG and quit
    p.add_argument("-v", "--verbose", action="count", default=0, help="log what LayerScope decides to stderr (-vv: debug)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.verbose:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("layerscope").setLevel(logging.INFO if args.verbose == 1 else logging.DEBUG)
    try:
        return run_gui(args)
    except LayerScopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
