"""What every command shares: the progress bar, the checks made before any work, the stderr console."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from layerscope.profiler import LayerScopeError, drive
from layerscope.profiler.history import Record
from layerscope.profiler.jobs import ModelRequest
from layerscope.profiler.progress import Work
from layerscope.profiler.safeio import check_output_path

__all__ = ["err", "run_work", "check_before_work", "request_for", "setup_logging", "add_history_arguments", "record_for", "said_recorded"]

err = Console(stderr=True)


def run_work(work: Work, quiet: bool):
    """Drive a core work generator with a progress bar on stderr."""
    if quiet:
        return drive(work)
    with Progress(TextColumn("{task.description:<10}"), BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[detail]}"),
                  console=err, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def update(p) -> None:
            if p.stage not in tasks:
                tasks[p.stage] = bar.add_task(p.stage, total=p.total, detail="")
            bar.update(tasks[p.stage], completed=p.done, total=p.total, detail=p.detail)

        return drive(work, update)


def check_before_work(args: argparse.Namespace, flags: dict[str, str]) -> None:
    """The counts and every output path the user gave, checked before any work starts."""
    if getattr(args, "runs", 1) < 1 or getattr(args, "warmup", 0) < 0:
        raise LayerScopeError("--runs must be >= 1 and --warmup >= 0.")
    for attr, flag in flags.items():
        value = getattr(args, attr, None)
        if value:
            check_output_path(value, flag)


def request_for(args: argparse.Namespace, spec: str | None = None) -> ModelRequest:
    """The one typed request of a command's MODEL argument and model options."""
    return ModelRequest.from_args(args, spec)


@contextlib.contextmanager
def setup_logging(verbosity: int) -> Iterator[None]:
    """Quiet by default; ``-v`` shows what LayerScope decided (capture path, calibration, exporter
    fallbacks, plan resolution), ``-vv`` adds debug detail and the full cause of an error. The
    handler is removed afterwards, so an in-process caller's logging is left as it was."""
    if verbosity <= 0:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)  # one plain line per record: greppable, never wrapped
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("layerscope")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbosity == 1 else logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def add_history_arguments(p: argparse.ArgumentParser) -> None:
    """--note, --history and --no-history: every profile and compress run is recorded in the history."""
    p.add_argument("--note", help="a note stored with this run in the experiment history (`layerscope history`)")
    p.add_argument("--history", metavar="URL", help="history database: a file path or a database URL (default: "
                                                    "$LAYERSCOPE_HISTORY or ~/.local/share/layerscope/history.sqlite)")
    p.add_argument("--no-history", action="store_true", help="do not record this run in the history")


def record_for(args: argparse.Namespace) -> Record:
    return Record(getattr(args, "history", None), getattr(args, "note", None) or "", not getattr(args, "no_history", False))


def said_recorded(record: Record, console: Console) -> None:
    if record.run_id is not None:
        console.print(f"Recorded as history run {record.run_id} (`layerscope history show {record.run_id}`)")
    elif record.error:
        err.print(f"[yellow]warning:[/] not recorded in the history: {record.error}", highlight=False)
