"""Resource guards: know before running whether the work fits this machine.

* ``parse_device`` turns ``--device`` into a torch device or an error that names what is here.
* ``check_input_bytes`` refuses example inputs that cannot even be allocated.
* ``estimate_activation_bytes`` runs the model once on fake tensors (shapes and dtypes only, no
  data, no memory) and follows which intermediate storages are alive, as an eager run frees them;
  the model's attributes are restored afterwards, so a forward that caches tensors on itself is
  left as it was. ``check_memory`` compares that estimate with the memory available now and
  refuses, with both numbers, when the run would not fit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import InputSpecError, ResourceError
from .format import fmt_bytes

__all__ = ["release_memory", "available_memory_bytes", "parse_device", "check_input_bytes", "estimate_activation_bytes", "check_memory",
           "MAX_DIMS", "MAX_ELEMENTS", "OtherLoad", "threads", "other_load_now", "untouched"]

log = logging.getLogger(__name__)

MAX_DIMS = 12
MAX_ELEMENTS = 2**40  # per tensor: 4 TiB of float32 is not an input shape, it is a typo
MEMORY_HEADROOM = 0.9  # leave a tenth of what is available for everything else
_HEADROOM = MEMORY_HEADROOM


_LIBC: Any = None  # libc once loaded, False where there is none


def release_memory() -> None:
    """Hand memory that is free inside the C heap back to the OS (glibc ``malloc_trim``; a no-op
    elsewhere). Streaming work that allocates and frees many mid-size tensors otherwise leaves
    the heap fragmented: measured on a 320M-parameter decoder, ``compare`` peaked ~0.9 GB higher.
    Called between steps, never inside a timed region."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def _cgroup_available() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def available_memory_bytes() -> int:
    """Memory this process can still take without swapping (0 when unknown)."""
    avail: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None and hasattr(os, "sysconf"):
        with contextlib.suppress(ValueError, OSError):
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    cg = _cgroup_available()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail or 0


def parse_device(text: str | None) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` that exists here, or ``meta`` (static profiles: no values, nothing
    allocated); anything else is an InputSpecError."""
    spec = (text or "cpu").strip()
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise InputSpecError(f"--device {spec!r} is not a device; use cpu or cuda (cuda:N for the N-th GPU).") from exc
    if dev.type == "meta":
        return dev  # static profiles only (the jobs check)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InputSpecError(f"--device {spec}: {why} (torch {torch.__version__}); use --device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputSpecError(f"--device {spec}: there are {torch.cuda.device_count()} CUDA device(s) here (cuda:0…).")
    elif dev.type != "cpu":
        raise InputSpecError(f"--device {spec}: LayerScope measures on cpu or cuda, not {dev.type}.")
    return dev


def check_input_bytes(shapes: Sequence[Sequence[int]], itemsizes: Sequence[int], limit: int | None = None,
                      what: str = "The example inputs alone", share: float = _HEADROOM,
                      fix: str = "use a smaller --input-shape", copies: int = 1) -> int:
    """Bytes ``copies`` sets of these tensors take; ResourceError before allocating when they would
    need more than ``share`` of ``limit`` (None: the memory available now)."""
    total = 0
    for shape, size in zip(shapes, itemsizes, strict=True):
        if len(shape) > MAX_DIMS:
            raise InputSpecError(f"input shape {tuple(shape)} has {len(shape)} dimensions; at most {MAX_DIMS} are supported.")
        n = math.prod(shape)
        if n > MAX_ELEMENTS:
            raise InputSpecError(f"input shape {tuple(shape)} has {n:.3g} elements; that is not a model input.")
        total += n * size
    total *= copies
    limit = available_memory_bytes() if limit is None else limit
    if limit and total > share * limit:
        raise ResourceError(f"{what} take {fmt_bytes(total)}, but only {fmt_bytes(limit)} of memory is available; {fix}.")
    return total


@contextlib.contextmanager
def untouched(module: nn.Module) -> Iterator[None]:
    """Undo whatever a pass stores on the user's modules: attributes (ultralytics' anchors cached on
    the first forward, here possibly inference tensors or fakes), entries of dict/list/set attributes
    (timm LeViT's per-device bias cache, which a trace fills with an fx Proxy), parameters, buffers and
    submodules swapped in. Every pass LayerScope makes over a model (the reference run, fx trace,
    export, timing, ONNX export, the comparison) runs inside one, so the next pass sees the model the
    user gave. Values changed in place inside existing tensors are not undone (eval-mode forwards do
    not change them; training-mode batch norm statistics would)."""
    saved = []
    for m in module.modules():
        containers = [(v, dict(v) if isinstance(v, dict) else type(v)(v)) for v in vars(m).values()
                      if type(v) in (dict, list, set)]
        saved.append((m, dict(vars(m)), dict(m._parameters), dict(m._buffers), dict(m._modules), containers))
    try:
        yield
    finally:
        for m, attrs, params, buffers, mods, containers in saved:
            vars(m).clear()
            vars(m).update(attrs)
            m._parameters.clear()
            m._parameters.update(params)
            m._buffers.clear()
            m._buffers.update(buffers)
            m._modules.clear()
            m._modules.update(mods)
            for live, copy in containers:
                live.clear()
                live.update(copy) if isinstance(live, (dict, set)) else live.extend(copy)


InputSpec = tuple[tuple[int, ...], torch.dtype]


def estimate_activation_bytes(module: nn.Module, inputs: Sequence[InputSpec]) -> int | None:
    """Peak bytes of intermediate tensors alive during one eager forward on inputs of these
    (shape, dtype), from a run on fake tensors (no data, no real memory; the inputs need not
    exist yet). None when the model cannot run on fake tensors (e.g. a branch on a value)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class _Live(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live = 0
            self.peak = 0
            self.alive: set[int] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    st = t.untyped_storage()
                    key, n = st._cdata, st.nbytes()
                    if n and key not in self.alive:
                        self.alive.add(key)
                        self.live += n
                        self.peak = max(self.peak, self.live)
                        weakref.finalize(t, self._free, key, n)
            return out

        def _free(self, key: int, n: int) -> None:
            if key in self.alive:
                self.alive.discard(key)
                self.live -= n

    try:
        with untouched(module), FakeTensorMode(allow_non_fake_inputs=True):
            fake = [torch.zeros(shape, dtype=dtype) for shape, dtype in inputs]
            tracker = _Live()
            with tracker, torch.no_grad():
                module(*fake)
            return tracker.peak
    except Exception:
        log.debug("no activation-memory estimate: the fake-tensor run failed", exc_info=True)
        return None


def check_memory(module: nn.Module, inputs: Sequence[InputSpec], limit_bytes: int | None = None,
                 what: str = "the model") -> int | None:
    """Refuse (ResourceError) when the estimated activation memory does not fit. ``limit_bytes``
    None: the memory available now; 0: no check. Returns the estimate (None when unknown)."""
    if limit_bytes == 0:
        return None
    estimate = estimate_activation_bytes(module, inputs)
    limit = available_memory_bytes() if limit_bytes is None else limit_bytes
    if estimate is not None and limit and estimate > _HEADROOM * limit:
        shapes = ", ".join("x".join(map(str, shape)) for shape, _ in inputs)
        raise ResourceError(f"Running {what} on inputs {shapes} needs about {fmt_bytes(estimate)} of activation memory "
                            f"(estimated on fake tensors), but {fmt_bytes(limit)} is available. Use a smaller "
                            f"--input-shape, or --max-memory GIB to set the limit yourself (0 turns the check off).")
    return estimate


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat (steal counts as busy); None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class OtherLoad:
    """Share of the machine's CPU capacity used by *other* processes over an interval: the
    machine's busy time (/proc/stat) minus this process's CPU time, over wall time x CPUs."""

    def __init__(self) -> None:
        self.start = _cpu_jiffies()
        self.cpu0 = time.process_time()

    def share(self) -> float | None:
        end = _cpu_jiffies()
        if self.start is None or end is None:
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        busy_s = (end[0] - self.start[0]) / hz
        capacity_s = (end[1] - self.start[1]) / hz  # wall time x CPUs, as the kernel counts it
        ours = time.process_time() - self.cpu0
        return max(0.0, busy_s - ours) / capacity_s if capacity_s > 0 else None


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block (None: leave torch's default), restored after."""
    if n is None:
        yield
        return
    if n < 1:
        raise InputSpecError(f"--threads {n}: use 1 or more.")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def other_load_now(seconds: float = 0.3) -> float | None:
    """Share of the CPUs other processes use right now, sampled over ``seconds`` (None off Linux)."""
    probe = OtherLoad()
    time.sleep(seconds)
    return probe.share()
