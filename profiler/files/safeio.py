"""Files in and out, one discipline for all of them.

Out: every file LayerScope writes (JSON, CSV, plans, configs, ``.pt2``, ``.onnx``, caches) goes
through ``atomic_path``: the writer fills a hidden temporary file in the same folder, it is
fsynced and renamed over the target in one step. A failure or an interrupt at any moment leaves
the previous file byte-identical; the message says so. ``check_output_path`` is called before any
work starts, so a missing or read-only folder, a folder where a file should go, or a disk too
small for an artifact of known size is reported in a second, not after minutes of profiling.

In: every JSON LayerScope reads (plans, hardware profiles, the calibration cache, saved profiles,
ONNX mappings) goes through ``read_json``/``parse_json``: size and nesting limits, strict UTF-8,
no ``NaN``/``Infinity`` literals, and every failure — including the ones ``json`` lets escape
(``RecursionError``, ``ValueError`` for integers over 4,300 digits, ``UnicodeDecodeError``) — is
the caller's ``LayerScopeError`` subclass naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import LayerScopeError, OutputError
from ..format import fmt_bytes

__all__ = [
    "atomic_path", "atomic_write_text", "check_output_path", "read_json", "parse_json", "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH", "finite", "positive", "check_free_space", "check_output_folder", "OutputFolder", "MANIFEST", "csv_cell",
    "csv_text",
]

MAX_JSON_BYTES = 512 * 2**20  # a saved profile of a 10,000-layer model is ~40 MiB
MAX_JSON_DEPTH = 64  # LayerScope's own files nest at most ~10 deep
_FREE_SPACE_MARGIN = 16 * 2**20  # bytes kept free beyond an artifact's estimated size


def check_free_space(folder: Path, needed_bytes: int, what: str, error: type[LayerScopeError] = OutputError) -> None:
    """``error`` when ``folder``'s disk has less than ``needed_bytes`` (plus a margin) free."""
    free = shutil.disk_usage(folder).free
    if needed_bytes > 0 and free < needed_bytes + _FREE_SPACE_MARGIN:
        raise error(f"{what} needs about {fmt_bytes(needed_bytes)} of disk in {folder}, which has {fmt_bytes(free)} free; "
                    f"free some space or write elsewhere.")


# --------------------------------------------------------------------------- output
def check_output_path(path: str | os.PathLike[str], what: str = "output", size_bytes: int = 0) -> Path:
    """Fail now, before any work, if ``path`` cannot be written (optionally: ``size_bytes`` of it).

    Checks: not a folder, its folder exists and is a folder, a file can really be created there
    (permissions, read-only mounts — asking ``os.access`` is not enough as root), and the disk has
    room for an artifact of known size."""
    p = Path(path).expanduser()
    if str(path).strip() == "":
        raise OutputError(f"{what}: the file name is empty.")
    if p.is_dir():
        raise OutputError(f"{what} {p} is a folder; give a file name inside it.")
    parent = _parent(p, what)
    _probe_write(parent, what, p)
    check_free_space(parent, size_bytes, f"{what} {p}")
    return p


def _parent(p: Path, what: str) -> Path:
    """The folder an output ``p`` goes into: it must exist and be a folder (LayerScope creates no trees)."""
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"{what} {p}: the folder {parent} does not exist; create it first.")
    if not parent.is_dir():
        raise OutputError(f"{what} {p}: {parent} is not a folder.")
    return parent


def _probe_write(folder: Path, what: str, target: Path) -> None:
    """A file can really be created in ``folder`` (permissions, read-only mounts: asking ``os.access`` is not
    enough as root)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".layerscope-", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what} {target}: cannot write in {folder}: {exc.strerror or exc}.") from exc


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], what: str = "output") -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for a writer to fill; on success it replaces
    ``path`` atomically, on any failure (an exception, Ctrl+C) it is removed and ``path`` is left
    as it was. ``OSError`` becomes ``OutputError`` naming the file and saying the old one is intact.

    The temporary name keeps the suffix (``.model.<id>.tmp.pt2``), for writers that check it."""
    p = Path(path).expanduser()
    tmp = p.with_name(f".{p.stem}.{uuid.uuid4().hex[:8]}.tmp{p.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"{what} {p}: the writer produced no file.")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
        _fsync_dir(p.parent if str(p.parent) else Path("."))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            kept = "the existing file is unchanged" if p.exists() else "nothing was written"
            raise OutputError(f"Could not write {what} {p}: {exc.strerror or exc}; {kept}.") from exc
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, what: str = "output") -> Path:
    with atomic_path(path, what) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return Path(path).expanduser()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A text cell a spreadsheet would evaluate (it begins with ``= + - @``, a tab or a carriage return:
    OWASP's CSV-injection rule) is written with a leading ``'``, so a layer named ``=HYPERLINK(…)`` stays
    text. Numbers stay numbers; None is an empty cell."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_text(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    """CSV with every cell through ``csv_cell``: the one CSV writer of LayerScope's outputs."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(list(header))
    for row in rows:
        w.writerow([csv_cell(v) for v in row])
    return buf.getvalue()


# --------------------------------------------------------------------------- output folders
MANIFEST = ".layerscope-manifest.json"


def _manifest(folder: Path) -> list[str] | None:
    """The files LayerScope wrote in ``folder`` last time, or None when it is not LayerScope's folder."""
    path = folder / MANIFEST
    if not path.is_file() or path.is_symlink():
        return None
    try:
        data = parse_json(path.read_bytes(), str(path), OutputError, max_bytes=16 * 2**20)
    except (OutputError, OSError):
        return None
    files = data.get("files") if isinstance(data, dict) and data.get("written_by") == "layerscope" else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return [f for f in files if f and "/" not in f and "\\" not in f and f not in (".", "..", MANIFEST)]


def check_output_folder(path: str | os.PathLike[str], what: str, force: bool = False) -> Path:
    """Fail now, before any work, unless ``path`` is a folder LayerScope may fill: new, empty, or one it
    made itself (it holds LayerScope's manifest). A folder of the user's with files in it is refused,
    naming them, unless ``force``."""
    p = Path(path).expanduser()
    if str(path).strip() == "":
        raise OutputError(f"{what}: the folder name is empty.")
    if p.exists() and not p.is_dir():
        raise OutputError(f"{what} {p} is a file, not a folder.")
    if p.is_dir():
        others = sorted(e.name for e in p.iterdir())
        if others and _manifest(p) is None and not force:
            shown = ", ".join(others[:5]) + (f", … ({len(others)} in all)" if len(others) > 5 else "")
            raise OutputError(f"{what} {p}: the folder holds files LayerScope did not write ({shown}); give a new or empty "
                              f"folder, or pass --force to write into it (files of the same names are replaced).")
        _probe_write(p, what, p)
        return p
    _probe_write(_parent(p, what), what, p)
    return p


class OutputFolder:
    """A folder LayerScope fills (``--workdir``, ``--model-explorer``, ``sweep --out``), checked with
    ``check_output_folder``. ``finish`` writes the manifest of what this run wrote (every file that is new
    or changed since ``open``: another inode, time or size) and removes the files an earlier run of LayerScope listed
    there that this run did not write again, so no stale plan of a previous sweep is left behind."""

    def __init__(self, path: str | os.PathLike[str], what: str, force: bool = False) -> None:
        self.path = check_output_folder(path, what, force)
        self.what = what
        self.previous: list[str] = []
        self.before: dict[str, tuple[int, int, int]] = {}
        self.stale: list[str] = []

    def open(self) -> Path:
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.what} {self.path}: cannot create it: {exc.strerror or exc}.") from exc
        self.previous = _manifest(self.path) or []
        self.before = {e.name: self._stamp(e) for e in self.path.iterdir() if e.is_file()}
        return self.path

    @staticmethod
    def _stamp(entry: Path) -> tuple[int, int, int]:
        st = entry.stat()
        return st.st_ino, st.st_mtime_ns, st.st_size  # an atomic write (a rename) always brings a new inode

    def finish(self, complete: bool = True) -> list[str]:
        """Write the manifest; return the stale files removed. A run that did not complete removes
        nothing and keeps listing the earlier run's files."""
        now = {e.name: self._stamp(e) for e in self.path.iterdir() if e.is_file() and e.name != MANIFEST}
        written = sorted(n for n, stamp in now.items() if self.before.get(n) != stamp)
        stale = [n for n in self.previous if n not in written and (self.path / n).is_file()
                 and not (self.path / n).is_symlink()] if complete else []
        if not complete:
            written = sorted(set(written) | {n for n in self.previous if n in now})
        for name in stale:
            with contextlib.suppress(OSError):
                (self.path / name).unlink()
        atomic_write_text(self.path / MANIFEST, json.dumps({"written_by": "layerscope", "files": written}, indent=1),
                          f"{self.what} manifest")
        self.stale = stale
        return stale

    def __enter__(self) -> Path:
        return self.open()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.finish(complete=exc_type is None)


# --------------------------------------------------------------------------- input
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _check_depth(data: Any, max_depth: int) -> None:
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            raise RecursionError
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def parse_json(raw: str | bytes, origin: str, error: type[Exception], max_bytes: int = MAX_JSON_BYTES,
               max_depth: int = MAX_JSON_DEPTH, non_finite: bool = False) -> Any:
    """Parse JSON text; every failure is ``error`` naming ``origin``. ``non_finite`` accepts the
    ``NaN``/``Infinity`` literals Python's json module writes (torch's program files carry them)."""
    if len(raw) > max_bytes:
        raise error(f"{origin} is {fmt_bytes(len(raw))}; LayerScope reads JSON files up to {fmt_bytes(max_bytes)}.")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise error(f"{origin} is not UTF-8 text (invalid byte at offset {exc.start}); is it the right file?") from exc
    else:
        text = raw
    try:
        data = json.loads(text, parse_constant=float if non_finite else _reject_constant)
        _check_depth(data, max_depth)
    except json.JSONDecodeError as exc:
        raise error(f"{origin} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from exc
    except RecursionError as exc:
        raise error(f"{origin} nests objects or lists more than {max_depth} deep; it is not a LayerScope file.") from exc
    except ValueError as exc:  # NaN/Infinity literals; integers too long to convert
        raise error(f"{origin} is not valid JSON here: {exc}.") from exc
    return data


def read_json(path: str | os.PathLike[str], what: str, error: type[LayerScopeError], max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Read and parse a JSON file named by the user; ``what`` says what it should be ("plan")."""
    p = Path(path).expanduser()
    try:
        if not p.exists():
            raise error(f"{what} file not found: {p}.")
        if not p.is_file():
            raise error(f"{what} {p} is not a file.")
        size = p.stat().st_size
        if size > max_bytes:
            raise error(f"{what} {p} is {fmt_bytes(size)}; LayerScope reads JSON files up to {fmt_bytes(max_bytes)}.")
        raw = p.read_bytes()
    except OSError as exc:
        raise error(f"Cannot read {what} {p}: {exc.strerror or exc}.") from exc
    return parse_json(raw, f"{what} {p}", error, max_bytes, max_depth)


# --------------------------------------------------------------------------- numbers
def finite(value: Any, field: str, origin: str, error: type[LayerScopeError]) -> float:
    """``value`` as a finite float, else ``error`` naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{origin}: field '{field}' is {value!r}; it must be a number.")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):
        raise error(f"{origin}: field '{field}' is {value!r}; it must be a finite number.")
    return v


def positive(value: Any, field: str, origin: str, error: type[LayerScopeError]) -> float:
    v = finite(value, field, origin, error)
    if v <= 0:
        raise error(f"{origin}: field '{field}' is {value!r}; it must be greater than zero.")
    return v
