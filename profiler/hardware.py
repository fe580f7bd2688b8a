"""Hardware profiles for the roofline: measured on this machine, or a target device's datasheet.

``calibrate()`` measures peak matmul FLOP/s (float32 and bfloat16) and streaming-copy bandwidth
here and caches the result; device profiles shipped in ``assets/devices`` carry their datasheet
source. A profile's ridge point (FLOP/byte) = peak FLOP/s / bandwidth.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import itertools
import json
import logging
import math
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .errors import HardwareProfileError, OutputError
from .progress import Progress, Work
from .resources import OtherLoad
from .safeio import atomic_write_text, parse_json, positive, read_json
from .serde import from_jsonable, to_jsonable
from .workspace import cache_root

__all__ = [
    "HardwareProfile", "calibrate", "cache_path", "load_cached", "save_cached", "trusted",
    "device_profile_names", "load_device_profile", "resolve_hardware", "theoretical_cpu_gflops", "CALIBRATION_VERSION",
    "merge_best",
]

log = logging.getLogger(__name__)


_KINDS = ("measured", "datasheet")
_DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64", "int8", "float8")
# A measurement is clean when other processes used less than this share of the machine's CPU
# capacity meanwhile; above it our threads were preempted and the peak would read low.
MAX_OTHER_LOAD = 0.15
MAX_SPREAD = 0.25  # median rep / best rep - 1 above this: the runs disagree too much to trust


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    peak_gflops: dict[str, float]  # dtype name -> GFLOP/s
    bandwidth_gbs: float  # GB/s (1e9 bytes per second)
    source: str  # how the numbers were obtained (measurement or datasheet reference)
    kind: str = "measured"  # "measured" | "datasheet"
    device: str = "cpu"
    measured_at: str = ""
    details: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # warnings about how far the numbers can be trusted
    bandwidths_gbs: dict[str, float] = field(default_factory=dict)  # every bandwidth measured ("copy", "read"); the roof uses the max
    # Cache-aware roof: copy bandwidth when the bytes moved fit a working set of this size (key: bytes,
    # as a string for JSON). A layer whose data fits a cache is judged against that cache's speed.
    cache_bandwidths_gbs: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The physics: a roof is a finite positive number. NaN/inf/0 would silently put every
        # layer in one bound class, so no HardwareProfile can hold them (files, caches, code).
        origin = f"hardware profile {self.name!r}"
        if not isinstance(self.peak_gflops, dict) or not self.peak_gflops:
            raise HardwareProfileError(f"{origin}: field 'peak_gflops' must map at least one dtype (e.g. float32) to GFLOP/s.")
        for dt, v in self.peak_gflops.items():
            positive(v, f"peak_gflops.{dt}", origin, HardwareProfileError)
        positive(self.bandwidth_gbs, "bandwidth_gbs", origin, HardwareProfileError)
        for k, v in self.bandwidths_gbs.items():
            positive(v, f"bandwidths_gbs.{k}", origin, HardwareProfileError)
        for k, v in self.cache_bandwidths_gbs.items():
            if not k.isdigit() or int(k) <= 0:
                raise HardwareProfileError(f"{origin}: field 'cache_bandwidths_gbs' key {k!r} must be a working-set size in bytes.")
            positive(v, f"cache_bandwidths_gbs.{k}", origin, HardwareProfileError)
        if self.kind not in _KINDS:
            raise HardwareProfileError(f"{origin}: field 'kind' is {self.kind!r}; it must be measured or datasheet.")

    def peak_for(self, dtype: str) -> tuple[float, str]:
        """Peak GFLOP/s for ``dtype`` and which dtype's peak was used (float32 as fallback)."""
        if dtype in self.peak_gflops:
            return self.peak_gflops[dtype], dtype
        if "float32" in self.peak_gflops:
            return self.peak_gflops["float32"], "float32"
        raise HardwareProfileError(f"Hardware profile {self.name!r} has no peak for {dtype} or float32.")

    def bandwidth_for(self, bytes_moved: int | None = None) -> float:
        """GB/s the roof allows for a layer moving ``bytes_moved``: the measured copy bandwidth at that
        working-set size, interpolated in log(size) between the measured sizes (caches fill gradually),
        the smallest size's below it, never below the DRAM bandwidth; DRAM when unknown or larger."""
        if bytes_moved is None or not self.cache_bandwidths_gbs:
            return self.bandwidth_gbs
        levels = sorted((int(k), v) for k, v in self.cache_bandwidths_gbs.items())
        if bytes_moved <= levels[0][0]:
            return max(levels[0][1], self.bandwidth_gbs)
        for (s0, b0), (s1, b1) in itertools.pairwise(levels):
            if bytes_moved <= s1:
                w = math.log(bytes_moved / s0) / math.log(s1 / s0)
                return max(b0 + w * (b1 - b0), self.bandwidth_gbs)
        return self.bandwidth_gbs

    def roof_gflops(self, intensity, dtype: str = "float32", bytes_moved: int | None = None):
        """The roof at an arithmetic intensity (FLOP/byte): min(peak, intensity × bandwidth), in
        GFLOP/s, with the bandwidth of the working set ``bytes_moved`` fits (DRAM when None). Works
        elementwise on numpy arrays (the roofline plot draws it)."""
        roof = np.minimum(self.peak_for(dtype)[0], np.asarray(intensity, dtype=float) * self.bandwidth_for(bytes_moved))
        return float(roof) if roof.ndim == 0 else roof

    def roof_ms(self, flops: int, bytes_moved: int, dtype: str = "float32") -> float:
        """The fastest the roof allows for this much work: max(FLOPs / peak, bytes / bandwidth), in ms."""
        return max(flops / (self.peak_for(dtype)[0] * 1e9), bytes_moved / (self.bandwidth_for(bytes_moved) * 1e9)) * 1e3

    def ridge_point(self, dtype: str = "float32") -> float:
        """Arithmetic intensity (FLOP/byte) where the memory roof meets the compute roof."""
        return self.peak_for(dtype)[0] / self.bandwidth_gbs

    def to_json(self) -> str:
        return json.dumps(to_jsonable(self), indent=2)

    @classmethod
    def from_data(cls, data: object, origin: str = "hardware profile") -> HardwareProfile:
        """From parsed JSON; every problem is a HardwareProfileError naming ``origin`` and the field."""
        if not isinstance(data, dict):
            raise HardwareProfileError(f"{origin} must be a JSON object with name, peak_gflops, bandwidth_gbs and source.")
        peaks = data.get("peak_gflops")
        if not isinstance(peaks, dict) or not peaks:
            raise HardwareProfileError(f"{origin}: field 'peak_gflops' must map at least one dtype (e.g. float32) to GFLOP/s.")
        for dt, v in peaks.items():
            if dt not in _DTYPE_NAMES:
                raise HardwareProfileError(f"{origin}: field 'peak_gflops.{dt}' is not a dtype LayerScope knows ({', '.join(_DTYPE_NAMES)}).")
            positive(v, f"peak_gflops.{dt}", origin, HardwareProfileError)
        positive(data.get("bandwidth_gbs"), "bandwidth_gbs", origin, HardwareProfileError)
        try:
            return from_jsonable(cls, data)
        except HardwareProfileError as exc:
            raise HardwareProfileError(f"{origin}: {exc}") from exc
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise HardwareProfileError(f"{origin} is not a valid hardware profile: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes, origin: str = "hardware profile") -> HardwareProfile:
        return cls.from_data(parse_json(text, origin, HardwareProfileError, max_bytes=2**20), origin)


def _cpu_name() -> str:
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


def calibrate(device: str = "cpu", matmul_size: int = 2048, copy_mib: int = 256, reps: int = 5,
              budget_s: float = 0.3) -> Work[HardwareProfile]:
    """Measure this machine's roof: peak GFLOP/s per dtype from the kernels models use, and memory
    bandwidth from a copy (read + write) and a read-only reduction; the roof takes the faster of each.

    CPU: each kernel is short (about 1 ms) and repeated for ``budget_s``; the fastest run counts, so a
    preempted run costs nothing. CUDA: one ``torch.mm`` per dtype sized to ``matmul_size`` (best of ``reps``).
    A measurement taken while other processes used more than ``MAX_OTHER_LOAD`` of the CPUs
    (Linux: /proc/stat) or whose runs disagree by more than ``MAX_SPREAD`` carries a note;
    ``resolve_hardware`` does not cache such a profile."""
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
    cpu = dev.type == "cpu"
    sync: Callable[[], object] = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    dtypes = ["float32", "bfloat16"] + (["float16"] if dev.type == "cuda" else [])
    steps = len(dtypes) + 1
    peaks: dict[str, float] = {}
    kernels: dict[str, float] = {}  # "dtype kernel" -> GFLOP/s
    timings: list[tuple[str, _Timing]] = []
    load = OtherLoad()
    for i, name in enumerate(dtypes):  # inference mode never held across a yield (see timing.measure)
        dt = getattr(torch, name)
        with torch.inference_mode():
            if cpu:
                for what, fn, flops in _cpu_kernels(dt):
                    fn()  # warm-up: oneDNN builds its primitive on the first call
                    t = _best_of(fn, sync, budget_s)
                    kernels[f"{name} {what}"] = flops / t.best / 1e9
                    timings.append((f"{name} {what}", t))
            else:
                n = _matmul_size(dt, dev, matmul_size, sync)
                a, b = torch.randn(n, n, device=dev).to(dt), torch.randn(n, n, device=dev).to(dt)
                torch.mm(a, b)
                t = _best_of(functools.partial(torch.mm, a, b), sync, 0.0, min_reps=reps)
                kernels[f"{name} torch.mm {n}x{n}x{n}"] = 2 * n**3 / t.best / 1e9
                timings.append((f"{name} matmul", t))
        peaks[name] = max(v for k, v in kernels.items() if k.startswith(f"{name} "))
        yield Progress("calibrate", i + 1, steps, f"{name}: {peaks[name]:.1f} GFLOP/s")
    with torch.inference_mode():
        numel = copy_mib * 2**20 // 4
        src = torch.rand(numel, device=dev)
        dst = torch.empty_like(src)
        dst.copy_(src)
        copy, read = (lambda s=src, d=dst: d.copy_(s)), (lambda s=src: s.sum())
        read()
        t_copy = _best_of(copy, sync, budget_s if cpu else 0.0, min_reps=reps)
        t_read = _best_of(read, sync, budget_s if cpu else 0.0, min_reps=reps)
        bandwidths = {"copy": 2 * src.nbytes / t_copy.best / 1e9, "read": src.nbytes / t_read.best / 1e9}
        timings += [("copy", t_copy), ("read", t_read)]
        del src, dst
        caches: dict[str, float] = {}
        for mib in (c for c in _CACHE_SIZES_MIB if c < copy_mib) if cpu else ():
            caches[str(2 * mib * 2**20)] = round(_copy_gbs(mib, sync, budget_s / 3, reps), 2)  # key: bytes a copy moves
    bandwidth = max(bandwidths.values())
    yield Progress("calibrate", steps, steps, f"copy {bandwidths['copy']:.1f} GB/s, read {bandwidths['read']:.1f} GB/s")
    notes = []
    other = load.share() if cpu else None
    busy = [f"other processes used {other:.0%} of the CPUs"] if other is not None and other > MAX_OTHER_LOAD else []
    noisy = [f"{what}: {t.why_not()}" for what, t in timings if not t.steady]
    if busy or noisy:
        notes.append("measured while the machine was busy (" + "; ".join(busy + noisy) + "): the roof may read low. "
                     "Not cached; run `layerscope calibrate` again when the machine is quiet.")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    threads = torch.get_num_threads()
    theory = theoretical_cpu_gflops(threads) if cpu else None
    details = {"host": socket.gethostname(), "threads": str(threads), "torch": torch.__version__,
               "calibration": CALIBRATION_VERSION,
               **{f"kernel {k}": f"{v:.1f} GFLOP/s" for k, v in kernels.items()},
               **{f"bandwidth {k}": f"{v:.1f} GB/s" for k, v in bandwidths.items()},
               **{f"bandwidth copy moving {int(k) / 2**20:g} MiB": f"{v:.1f} GB/s" for k, v in caches.items()},
               **({"theoretical float32": f"{theory[0]:.0f} GFLOP/s ({theory[1]})"} if theory else {}),
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


def trusted(hw: HardwareProfile) -> bool:
    """A measurement clean enough to keep as this machine's roof."""
    return not hw.notes


def cache_path(device: str = "cpu") -> Path:
    """One cache per host, device and (on a CPU) thread count: the roof scales with the threads."""
    threads = f"-t{torch.get_num_threads()}" if device.startswith("cpu") else ""
    return cache_root() / f"hardware-{socket.gethostname()}-{device.replace(':', '_')}{threads}.json"


def load_cached(device: str = "cpu") -> tuple[HardwareProfile | None, str]:
    """The cached calibration, or None and why not. An unreadable cache (corrupt JSON, bad UTF-8,
    NaN/zero roofs, a folder where the file should be) is moved aside so it is re-measured."""
    p = cache_path(device)
    if not p.exists() and not p.is_symlink():
        return None, ""
    try:
        if not p.is_file():
            raise HardwareProfileError(f"{p} is not a file")
        hw = HardwareProfile.from_json(p.read_bytes(), f"calibration cache {p}")
        if not trusted(hw):
            raise HardwareProfileError("it was measured on a busy machine")
        if hw.details.get("calibration") != CALIBRATION_VERSION:
            raise HardwareProfileError("it was measured by an older calibration (matmul only)")
        return hw, ""
    except (HardwareProfileError, OSError) as exc:
        aside = p.with_name(f"{p.name}.bad-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(p, aside)
            where = f"moved to {aside}"
        except OSError as move_exc:
            raise HardwareProfileError(f"The calibration cache {p} is unreadable ({exc}) and cannot be moved aside "
                                       f"({move_exc.strerror}); delete it and run again.") from move_exc
        return None, f"the cached calibration was unusable ({exc}); {where} and re-measured"


def merge_best(old: HardwareProfile, new: HardwareProfile) -> HardwareProfile:
    """The faster of two clean calibrations of the same machine and thread count, number by number.
    A roof is the most the machine can do: on a shared host a quiet minute shows more of it than a
    busy one, so the cached roof only rises. Another host, thread count or method: ``new`` alone."""
    same = all(old.details.get(k) == new.details.get(k) for k in ("host", "threads", "calibration")) and old.device == new.device
    if not same:
        return new
    peaks = {k: max(v, old.peak_gflops.get(k, 0.0)) for k, v in new.peak_gflops.items()}
    caches = {k: max(v, old.cache_bandwidths_gbs.get(k, 0.0)) for k, v in new.cache_bandwidths_gbs.items()}
    bws = {k: max(v, old.bandwidths_gbs.get(k, 0.0)) for k, v in new.bandwidths_gbs.items()}
    n = int(old.details.get("calibrations kept", "1")) + 1
    return dataclasses.replace(new, peak_gflops=peaks, bandwidth_gbs=max(new.bandwidth_gbs, old.bandwidth_gbs),
                               bandwidths_gbs=bws, cache_bandwidths_gbs=caches,
                               details={**new.details, "calibrations kept": str(n)},
                               source=new.source + f"; the best of {n} clean calibrations of this machine")


def save_cached(hw: HardwareProfile) -> Path:
    """Cache a clean calibration, keeping the best of it and the one already cached (``merge_best``)."""
    p = cache_path(hw.device)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the cache folder {p.parent}: {exc.strerror or exc}.") from exc
    old, _ = load_cached(hw.device)
    atomic_write_text(p, (merge_best(old, hw) if old is not None else hw).to_json(), "calibration cache")
    return p


def _devices_dir():
    return resources.files("layerscope.assets") / "devices"


def device_profile_names() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in _devices_dir().iterdir() if p.name.endswith(".json"))


def load_device_profile(name_or_path: str) -> HardwareProfile:
    """A shipped device profile by name (see ``device_profile_names``) or a JSON file path."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".json":
        return HardwareProfile.from_data(read_json(path, "hardware profile", HardwareProfileError, max_bytes=2**20),
                                         f"hardware profile {path}")
    res = _devices_dir() / f"{name_or_path}.json"
    if "/" in name_or_path or not res.is_file():
        raise HardwareProfileError(f"Unknown device profile {name_or_path!r}; shipped: {', '.join(device_profile_names())}, or pass a .json file.")
    return HardwareProfile.from_json(res.read_bytes(), f"device profile {name_or_path}")


def resolve_hardware(target: str | None, device: str = "cpu", recalibrate: bool = False) -> Work[HardwareProfile]:
    """``target`` None/"this": this machine (cached calibration, measured on first use).

    A fresh measurement is cached only when it is clean (see ``calibrate``); otherwise it is used
    for this run with its note and measured again next time."""
    if target not in (None, "", "this"):
        return load_device_profile(target)
    hw, why = (None, "") if recalibrate else load_cached(device)
    if hw is not None:
        log.info("roofline of this machine from the calibration cache %s", cache_path(device))
    else:
        log.info("calibrating %s%s", device, f" ({why})" if why else "")
        hw = yield from calibrate(device)
        if trusted(hw):
            log.info("calibration cached at %s", save_cached(hw))
            hw = load_cached(device)[0] or hw  # the best of this and earlier clean calibrations
        else:
            log.warning("calibration not cached (measured under load): %s", "; ".join(hw.notes))
        if why:
            hw = dataclasses.replace(hw, notes=(*hw.notes, why))
    return hw
