"""Work files (exported ONNX graphs, ORT traces, quantised models) live in one place and go away.

Every job that needs scratch files asks ``work_dir(prefix)`` for a folder under
``$XDG_CACHE_HOME/layerscope/work`` (``~/.cache/layerscope/work``). The folder is removed when the
job ends — normally, on an error, on Ctrl+C, and (with ``install_signal_handlers``) on SIGTERM;
whatever a crash or SIGKILL leaves behind is swept at the next start: folders of processes that
no longer run, and the oldest ones while the total is over ``MAX_WORK_BYTES``. ``keep`` names a
folder of the user's (``--workdir``), which is used as is and never deleted.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError, ResourceError
from .safeio import OutputFolder, check_free_space

__all__ = ["cache_root", "work_root", "work_dir", "sweep", "install_signal_handlers", "MAX_WORK_BYTES"]

log = logging.getLogger(__name__)

MAX_WORK_BYTES = 8 * 2**30
_LIVE: set[Path] = set()
_LOCK = threading.Lock()


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "layerscope"


def work_root() -> Path:
    return cache_root() / "work"


def _pid_of(folder: Path) -> int | None:
    parts = folder.name.rsplit("-", 2)
    try:
        return int(parts[-2]) if len(parts) == 3 else None
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def sweep(max_bytes: int = MAX_WORK_BYTES) -> list[Path]:
    """Remove work folders of processes that are gone, then the oldest until under ``max_bytes``."""
    root = work_root()
    if not root.is_dir():
        return []
    removed = []
    folders = []
    for d in root.iterdir():
        if not d.is_dir() or d in _LIVE:
            continue
        pid = _pid_of(d)
        if pid is None or not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
        else:
            folders.append(d)
    total = sum(_size(d) for d in folders)
    for d in sorted(folders, key=lambda p: p.stat().st_mtime):
        if total <= max_bytes:
            break
        if _pid_of(d) == os.getpid():
            continue
        size = _size(d)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
        total -= size
    if removed:
        log.info("removed %d stale work folder(s) under %s", len(removed), root)
    return removed


@contextlib.contextmanager
def work_dir(prefix: str, keep: str | os.PathLike[str] | OutputFolder | None = None, needed_bytes: int = 0) -> Iterator[Path]:
    """A scratch folder for one job, removed afterwards; ``keep``: the user's folder (``--workdir``), kept. It
    must be new, empty or LayerScope's own (an ``OutputFolder``, which a face builds with the user's
    ``--force``); the files of an earlier run that this run did not write again are removed."""
    if keep:
        owned = keep if isinstance(keep, OutputFolder) else OutputFolder(keep, "--workdir")
        with owned as folder:
            check_free_space(folder, needed_bytes, f"{prefix} work files", ResourceError)
            yield folder
        return
    sweep()
    root = work_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create LayerScope's work folder {root}: {exc.strerror or exc}; "
                          f"set XDG_CACHE_HOME or pass --workdir.") from exc
    check_free_space(root, needed_bytes, f"{prefix} work files (--workdir puts them elsewhere)", ResourceError)
    folder = root / f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    with _LOCK:
        _LIVE.add(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with _LOCK:
            _LIVE.discard(folder)


@atexit.register
def _remove_live() -> None:
    for d in list(_LIVE):
        shutil.rmtree(d, ignore_errors=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl+C so every ``finally`` (work folders, temporary outputs) runs."""


def _on_sigterm(signum, _frame) -> None:
    raise Terminated(f"signal {signum}")


def install_signal_handlers() -> None:
    """Turn SIGTERM (and SIGHUP) into an exception in the main thread, so cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)):
        if sig is not None:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, _on_sigterm)

