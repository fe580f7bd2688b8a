"""``calibrate()``: peak matmul FLOP/s (float32, bfloat16) and streaming-copy bandwidth measured on this
machine, with the cache-aware roof and notes that say when the machine was too busy to trust."""

from __future__ import annotations

import datetime as _dt
import functools
import logging
import math
import platform
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import HardwareProfileError
from ..progress import Progress, Work
from ..resources import OtherLoad
from .profiles import HardwareProfile

__all__ = ["calibrate", "cpu_name", "theoretical_cpu_gflops", "CALIBRATION_VERSION", "MAX_OTHER_LOAD", "MAX_SPREAD"]

log = logging.getLogger(__name__)


# A measurement is clean when other processes used less than this share of the machine's CPU
# capacity meanwhile; above it our threads were preempted and the peak would read low.
MAX_OTHER_LOAD = 0.15
MAX_SPREAD = 0.25  # median rep / best rep - 1 above this: the runs disagree too much to trust


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass
class _Timing:
    best: float
    median: float
    near_best: int | None = None  # with many runs: how many came within 10 % of the best

    @property
    def spread(self) -> float:
        return self.median / self.best - 1 if self.best > 0 else math.inf

    @property
    def steady(self) -> bool:
        """The best is a speed the machine reaches again, not a one-off: many runs, at least 2 of them
        within 10 % of the best; a few runs, a median within ``MAX_SPREAD`` of the best."""
        return self.near_best >= 2 if self.near_best is not None else self.spread <= MAX_SPREAD

    def why_not(self) -> str:
        if self.near_best is not None:
            return f"only {self.near_best} run(s) within 10% of the best"
        return f"median {self.spread:.0%} over best"


def _matmul_size(dt: torch.dtype, dev: torch.device, max_size: int, sync, min_seconds: float = 0.02) -> int:
    """The smallest power-of-two size up to ``max_size`` whose multiply lasts ``min_seconds``:
    long enough to reach the peak, short enough that a slow dtype (bfloat16 without native
    support runs ~100x slower than float32) does not turn calibration into minutes."""
    n = min(256, max_size)
    while True:
        a = torch.randn(n, n, device=dev).to(dt)
        torch.mm(a, a)
        sync()
        t0 = time.perf_counter()
        torch.mm(a, a)
        sync()
        if time.perf_counter() - t0 >= min_seconds or n * 2 > max_size:
            return n
        n *= 2


CALIBRATION_VERSION = "3"  # a cache written by another method is measured again
_CACHE_SIZES_MIB = (1, 2, 4, 8, 16, 32, 64)  # working sets for the cache-aware roof (L2, L3, beyond)


def _best_of(fn: Callable[[], object], sync: Callable[[], object], budget_s: float, min_reps: int = 3,
             max_reps: int = 1000) -> _Timing:
    """Time a short kernel again and again for ``budget_s`` (at least ``min_reps`` times): the
    fastest run is the machine's speed; a run the scheduler preempted only makes the median slower.
    ``budget_s`` 0: exactly ``min_reps`` runs, judged by their median (``_Timing.steady``)."""
    secs: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(secs) < min_reps or (time.perf_counter() < deadline and len(secs) < max_reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        secs.append(time.perf_counter() - t0)
    best = min(secs)
    repeated = budget_s > 0 and len(secs) >= 10
    return _Timing(best, statistics.median(secs), sum(t <= best * 1.10 for t in secs) if repeated else None)


def _copy_gbs(mib: int, sync: Callable[[], object], budget_s: float, reps: int) -> float:
    """Copy bandwidth (read + write bytes) of a ``mib`` MiB tensor: a working set that fits a cache runs at its speed."""
    src = torch.rand(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    t = _best_of(lambda: dst.copy_(src), sync, budget_s, min_reps=reps)
    return 2 * src.nbytes / t.best / 1e9


def _cpu_kernels(dt: torch.dtype) -> list[tuple[str, Callable[[], object], int]]:
    """(name, kernel, FLOPs) for the compute paths models really take on a CPU, each call about a
    millisecond: a GEMM through the BLAS (``torch.mm``: linear/matmul layers) and convolutions
    through oneDNN (1x1 = a GEMM in oneDNN's blocking, and 3x3)."""
    f = torch.nn.functional
    a, b = torch.randn(512, 512).to(dt), torch.randn(512, 512).to(dt)
    x1, w1 = torch.randn(1, 512, 32, 32).to(dt), torch.randn(512, 512, 1, 1).to(dt)
    x3, w3 = torch.randn(1, 128, 56, 56).to(dt), torch.randn(128, 128, 3, 3).to(dt)
    return [
        ("torch.mm 512x512x512 (BLAS)", lambda: torch.mm(a, b), 2 * 512**3),
        ("conv2d 1x1 512->512 on 32x32 (oneDNN)", lambda: f.conv2d(x1, w1), 2 * 32 * 32 * 512 * 512),
        ("conv2d 3x3 128->128 on 56x56 (oneDNN)", lambda: f.conv2d(x3, w3, padding=1), 2 * 56 * 56 * 128 * 128 * 9),
    ]


def theoretical_cpu_gflops(threads: int) -> tuple[float, str] | None:
    """float32 peak from the ISA and the clock (/proc/cpuinfo; cpufreq's maximum where the kernel
    exposes it, else the clock reported now): FMA lanes x 2 FLOPs x 2 FMA units x GHz x threads. None
    where either cannot be read. An estimate, shown beside the measured peak: a VM may report its base
    clock while the cores boost above it, and AVX-512 load can lower the clock."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags and "fma" in flags else 4 if "sse2" in flags else 0
    ghz = None
    try:
        ghz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e6
    except (OSError, ValueError):
        mhz = [float(ln.split(":", 1)[1]) for ln in info.splitlines() if ln.startswith("cpu MHz")]
        ghz = max(mhz) / 1e3 if mhz else None
    if not lanes or not ghz:
        return None
    isa = {16: "AVX-512", 8: "AVX2+FMA", 4: "SSE2"}[lanes]
    return lanes * 2 * 2 * ghz * threads, f"{isa}: {lanes} float32 lanes x 2 (FMA) x 2 units x {ghz:.2f} GHz x {threads} threads"


def _theory_text(theory: tuple[float, str], measured: float | None) -> str:
    """The ISA/clock peak as shown beside the measured one. Measured above it, the clock read was not the clock the
    cores ran at (a VM reports its base clock; the cores boost): said, with the clock the measurement implies."""
    gflops, how = theory
    text = f"{gflops:.0f} GFLOP/s ({how})"
    if measured is not None and measured > gflops:
        text += (f"; below the measured {measured:.0f} GFLOP/s: the clock read is a base clock, the cores ran at "
                 f"{measured / gflops:.2f}x it or more, so this is a floor, not a ceiling")
    return text


def _checked(device: str, matmul_size: int, copy_mib: int, reps: int) -> torch.device:
    if not 64 <= matmul_size <= 16384:
        raise HardwareProfileError(f"calibrate: matmul size {matmul_size} is out of range; use 64 to 16384 (default 2048).")
    if not 1 <= copy_mib <= 8192:
        raise HardwareProfileError(f"calibrate: copy size {copy_mib} MiB is out of range; use 1 to 8192 MiB.")
    if reps < 1:
        raise HardwareProfileError("calibrate: reps must be at least 1.")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HardwareProfileError("calibrate --device cuda: no CUDA device is available here.")
    if dev.type not in ("cpu", "cuda"):
        raise HardwareProfileError(f"calibrate: device {device!r} is not supported; use cpu or cuda.")
    return dev


def _kernels(name: str, dev: torch.device, sync: Callable[[], object], matmul_size: int, reps: int, budget_s: float,
             timings: list[tuple[str, _Timing]]) -> dict[str, float]:
    """GFLOP/s of the kernels models use in dtype ``name`` ("dtype kernel" -> GFLOP/s); each timing is kept."""
    dt = getattr(torch, name)
    out: dict[str, float] = {}
    if dev.type == "cpu":
        for what, fn, flops in _cpu_kernels(dt):
            fn()  # warm-up: oneDNN builds its primitive on the first call
            t = _best_of(fn, sync, budget_s)
            out[f"{name} {what}"] = flops / t.best / 1e9
            timings.append((f"{name} {what}", t))
        return out
    n = _matmul_size(dt, dev, matmul_size, sync)
    a, b = torch.randn(n, n, device=dev).to(dt), torch.randn(n, n, device=dev).to(dt)
    torch.mm(a, b)
    t = _best_of(functools.partial(torch.mm, a, b), sync, 0.0, min_reps=reps)
    timings.append((f"{name} matmul", t))
    return {f"{name} torch.mm {n}x{n}x{n}": 2 * n**3 / t.best / 1e9}


def _bandwidths(dev: torch.device, sync: Callable[[], object], copy_mib: int, reps: int, budget_s: float,
                timings: list[tuple[str, _Timing]]) -> tuple[dict[str, float], dict[str, float]]:
    """DRAM bandwidth of a ``copy_mib`` copy (read + write bytes) and a read-only sum; on a CPU, the copy
    bandwidth of smaller working sets too (the cache-aware roof, keyed by the bytes a copy moves)."""
    cpu = dev.type == "cpu"
    src = torch.rand(copy_mib * 2**20 // 4, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)
    copy, read = (lambda s=src, d=dst: d.copy_(s)), (lambda s=src: s.sum())
    read()
    t_copy = _best_of(copy, sync, budget_s if cpu else 0.0, min_reps=reps)
    t_read = _best_of(read, sync, budget_s if cpu else 0.0, min_reps=reps)
    bandwidths = {"copy": 2 * src.nbytes / t_copy.best / 1e9, "read": src.nbytes / t_read.best / 1e9}
    timings += [("copy", t_copy), ("read", t_read)]
    del src, dst
    caches = {str(2 * mib * 2**20): round(_copy_gbs(mib, sync, budget_s / 3, reps), 2)
              for mib in ((c for c in _CACHE_SIZES_MIB if c < copy_mib) if cpu else ())}
    return bandwidths, caches


def _notes(other: float | None, timings: list[tuple[str, _Timing]]) -> list[str]:
    """Why the measurement cannot be trusted (and is not cached), if it cannot."""
    busy = [f"other processes used {other:.0%} of the CPUs"] if other is not None and other > MAX_OTHER_LOAD else []
    noisy = [f"{what}: {t.why_not()}" for what, t in timings if not t.steady]
    if not (busy or noisy):
        return []
    return ["measured while the machine was busy (" + "; ".join(busy + noisy) + "): the roof may read low. "
            "Not kept as this machine's clean roof; run `layerscope calibrate` again when the machine is quiet."]


def calibrate(device: str = "cpu", matmul_size: int = 2048, copy_mib: int = 256, reps: int = 5,
              budget_s: float = 0.3) -> Work[HardwareProfile]:
    """Measure this machine's roof: peak GFLOP/s per dtype from the kernels models use, and memory
    bandwidth from a copy (read + write) and a read-only reduction; the roof takes the faster of each.

    CPU: each kernel is short (about 1 ms) and repeated for ``budget_s``; the fastest run counts, so a
    preempted run costs nothing. CUDA: one ``torch.mm`` per dtype sized to ``matmul_size`` (best of ``reps``).
    A measurement taken while other processes used more than ``MAX_OTHER_LOAD`` of the CPUs
    (Linux: /proc/stat) or whose runs disagree by more than ``MAX_SPREAD`` carries a note;
    ``resolve_hardware`` does not cache such a profile."""
    dev = _checked(device, matmul_size, copy_mib, reps)
    cpu = dev.type == "cpu"
    sync: Callable[[], object] = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    dtypes = ["float32", "bfloat16"] + (["float16"] if dev.type == "cuda" else [])
    steps = len(dtypes) + 1
    peaks: dict[str, float] = {}
    kernels: dict[str, float] = {}  # "dtype kernel" -> GFLOP/s
    timings: list[tuple[str, _Timing]] = []
    load = OtherLoad()
    for i, name in enumerate(dtypes):  # inference mode never held across a yield (see timing.measure)
        with torch.inference_mode():
            kernels.update(_kernels(name, dev, sync, matmul_size, reps, budget_s, timings))
        peaks[name] = max(v for k, v in kernels.items() if k.startswith(f"{name} "))
        yield Progress("calibrate", i + 1, steps, f"{name}: {peaks[name]:.1f} GFLOP/s")
    with torch.inference_mode():
        bandwidths, caches = _bandwidths(dev, sync, copy_mib, reps, budget_s, timings)
    bandwidth = max(bandwidths.values())
    yield Progress("calibrate", steps, steps, f"copy {bandwidths['copy']:.1f} GB/s, read {bandwidths['read']:.1f} GB/s")
    other = load.share() if cpu else None
    notes = _notes(other, timings)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    threads = torch.get_num_threads()
    theory = theoretical_cpu_gflops(threads) if cpu else None
    details = {"host": socket.gethostname(), "threads": str(threads), "torch": torch.__version__,
               "calibration": CALIBRATION_VERSION,
               **{f"kernel {k}": f"{v:.1f} GFLOP/s" for k, v in kernels.items()},
               **{f"bandwidth {k}": f"{v:.1f} GB/s" for k, v in bandwidths.items()},
               **{f"bandwidth copy moving {int(k) / 2**20:g} MiB": f"{v:.1f} GB/s" for k, v in caches.items()},
               **({"theoretical float32": _theory_text(theory, peaks.get("float32"))} if theory else {}),
               **({"other load": f"{other:.2f}"} if other is not None else {})}
    how = (f"the fastest of short kernels repeated for {budget_s:g} s each (torch.mm through the BLAS, conv2d 1x1 and 3x3 "
           f"through oneDNN) per dtype" if cpu else f"best of {reps} torch.mm per dtype")
    return HardwareProfile(
        name=f"{name} (this machine)",
        peak_gflops={k: round(v, 2) for k, v in peaks.items()},
        bandwidth_gbs=round(bandwidth, 2),
        source=f"measured by layerscope calibrate: {how}; DRAM bandwidth the faster of a {copy_mib} MiB copy (read+write "
               f"bytes) and a read-only sum; cache-aware roof from copies of {', '.join(f'{c}' for c in _CACHE_SIZES_MIB)} MiB",
        kind="measured",
        device=str(dev),
        measured_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        details=details,
        notes=tuple(notes),
        bandwidths_gbs={k: round(v, 2) for k, v in bandwidths.items()},
        cache_bandwidths_gbs=caches,
    )
