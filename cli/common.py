"""What every command shares: the progress bar, the checks made before any work, the stderr console."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from layerscope.profiler import LayerScopeError, drive
from layerscope.profiler.errors import OutputError
from layerscope.profiler.files.safeio import check_output_folder, check_output_path
from layerscope.profiler.format import printable
from layerscope.profiler.history import Record
from layerscope.profiler.jobs import ModelRequest
from layerscope.profiler.progress import Work

__all__ = [
    "err", "InertConsole", "styled", "run_work", "check_before_work", "FORCE_HELP", "request_for",
    "setup_logging", "add_history_arguments", "record_for", "said_recorded",
]



class InertConsole(Console):
    """The command line's console: what a model, a file or a user named is printed as text. Markup is off
    (a layer named ``[/]`` or ``[link=…]`` is printed as it is, never parsed), and every control character
    of every string is shown as an escape, so nothing a name carries can drive the terminal. Styles are
    given with ``styled``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        super().__init__(*args, **kwargs)

    def render_str(self, text: str, *args: Any, **kwargs: Any) -> Text:
        return super().render_str(printable(text), *args, **kwargs)


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line of plain parts and ``(text, style)`` parts, every part printable (``styled(("warning:", "yellow"), " ", msg)``)."""
    return Text.assemble(*((printable(p[0]), p[1]) if isinstance(p, tuple) else printable(p) for p in parts))


err = InertConsole(stderr=True)


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


# every argument a command reads a file from (an output of the same name, compress --onnx, is left out)
_INPUTS = {"model": "MODEL", "plan": "--plan", "plan_b": "--plan-b", "against": "--against", "budgets": "--budgets",
           "space": "--space", "hardware": "--hardware", "profile_json": "--profile", "profile": "PROFILE",
           "compare": "--compare", "compress": "--compress", "onnx": "--onnx"}
FORCE_HELP = ("write into an output folder (--workdir, --model-explorer, --out DIR) that holds files LayerScope did not write; "
              "files of the same names are replaced")


def check_before_work(args: argparse.Namespace, flags: dict[str, str], folders: dict[str, str] | None = None) -> None:
    """The counts, every output path and output folder the user gave, checked before any work starts; an
    output that would replace one of the command's own inputs is refused."""
    if getattr(args, "runs", 1) < 1 or getattr(args, "warmup", 0) < 0:
        raise LayerScopeError("--runs must be >= 1 and --warmup >= 0.")
    outputs = {}
    for attr, flag in flags.items():
        value = getattr(args, attr, None)
        if value:
            outputs[check_output_path(value, flag).resolve()] = (flag, value)
    for attr, flag in (folders or {}).items():
        value = getattr(args, attr, None)
        if value:
            check_output_folder(value, flag, force=getattr(args, "force", False))
    for attr, flag in _INPUTS.items():
        value = getattr(args, attr, None)
        if attr in flags or not isinstance(value, str) or not value:
            continue
        path = value.rpartition(":")[0] if ".py:" in value else value
        hit = outputs.get(Path(path).expanduser().resolve())
        if hit is not None:
            raise OutputError(f"{hit[0]} {hit[1]} is the {flag} file this command reads; writing it would replace its input. "
                              f"Give the output another name.")


ME_HELP = ("write the model as Google AI Edge Model Explorer opens it (model.pt2, or your .pt2) and one node-data file per "
           "metric (latency, share, FLOPs, bound, %% of roof; SQNR after compression) keyed by its nodes, into FOLDER")


def write_model_explorer_for(folder: str, profile, loaded, console, sqnr_db: dict[str, float] | None = None,
                             threshold_db: float = 20.0, force: bool = False) -> None:
    """``--model-explorer FOLDER`` after a profile or compress run: the model as Model Explorer opens it and one
    node-data file per metric, keyed by that file's nodes; says how many layers landed and how to open them."""
    from layerscope.profiler.reports.model_explorer import write_model_explorer

    console.print("Writing the Model Explorer overlays (torch.export of the model)…")
    files = write_model_explorer(folder, profile, loaded.module, loaded.inputs, exported=loaded.exported,
                                 source_pt2=loaded.spec if loaded.kind == "pt2" else None, sqnr_db=sqnr_db, threshold_db=threshold_db,
                                 force=force)
    said_model_explorer(files, "layers", console)


def said_model_explorer(files, what: str, console) -> None:
    console.print(f"Wrote {len(files.node_data)} Model Explorer node-data files to {files.node_data[0].parent} "
                  f"({files.placed} of {files.total} {what} placed on the graph of {files.model})")
    if files.unplaced:
        shown = ", ".join(files.unplaced[:5]) + (f", … ({len(files.unplaced) - 5} more)" if len(files.unplaced) > 5 else "")
        console.print(styled("  ", ("note:", "yellow"), f" no node of that graph carries these {what}: {shown}"))
    console.print(f"  open: {files.command()}")


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


def add_data_arguments(p: argparse.ArgumentParser, threshold: bool = True) -> None:
    """--data and --samples (compress, compare, sweep), and --threshold and --calib-data (compress, compare)."""
    p.add_argument("--data", help="folder of .npz/.pt batches (x, and y for accuracy); default: the model's own labelled set "
                                  "(digits_cnn) or --samples random batches")
    p.add_argument("--samples", type=int, default=8, help="batches: random batches when no --data, or the first batches "
                                                          "of 60 images of the model's own set (default 8: all of digits' 6)")
    if threshold:
        p.add_argument("--calib-data", metavar="DIR", help="a data folder to fit int8 activation ranges on (default: a seeded "
                                                            "quarter of the samples; output and accuracy use the rest)")
        p.add_argument("--threshold", type=float, default=20.0, help="SQNR (dB) under which a layer counts as broken (default 20)")


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
        err.print(styled(("warning:", "yellow"), f" not recorded in the history: {record.error}"), highlight=False)
