"""Hardware profiles for the roofline: measured on this machine, or a target device's datasheet.

``calibrate()`` measures peak matmul FLOP/s (float32 and bfloat16) and streaming-copy bandwidth
here and caches the result; device profiles shipped in ``assets/devices`` carry their datasheet
source. A profile's ridge point (FLOP/byte) = peak FLOP/s / bandwidth.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import platform
import socket
import statistics
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .errors import HardwareProfileError, OutputError
from .progress import Progress, Work
from .safeio import atomic_write_text, parse_json, positive, read_json
from .serde import from_jsonable, to_jsonable
from .workspace import cache_root

__all__ = [
    "HardwareProfile", "calibrate", "cache_path", "load_cached", "save_cached", "trusted",
    "device_profile_names", "load_device_profile", "resolve_hardware",
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

    def __post_init__(self) -> None:
        # The physics: a roof is a finite positive number. NaN/inf/0 would silently put every
        # layer in one bound class, so no HardwareProfile can hold them (files, caches, code).
        origin = f"hardware profile {self.name!r}"
        if not isinstance(self.peak_gflops, dict) or not self.peak_gflops:
            raise HardwareProfileError(f"{origin}: field 'peak_gflops' must map at least one dtype (e.g. float32) to GFLOP/s.")
        for dt, v in self.peak_gflops.items():
            positive(v, f"peak_gflops.{dt}", origin, HardwareProfileError)
        positive(self.bandwidth_gbs, "bandwidth_gbs", origin, HardwareProfileError)
        if self.kind not in _KINDS:
            raise HardwareProfileError(f"{origin}: field 'kind' is {self.kind!r}; it must be measured or datasheet.")

    def peak_for(self, dtype: str) -> tuple[float, str]:
        """Peak GFLOP/s for ``dtype`` and which dtype's peak was used (float32 as fallback)."""
        if dtype in self.peak_gflops:
            return self.peak_gflops[dtype], dtype
        if "float32" in self.peak_gflops:
            return self.peak_gflops["float32"], "float32"
        raise HardwareProfileError(f"Hardware profile {self.name!r} has no peak for {dtype} or float32.")

    def roof_gflops(self, intensity, dtype: str = "float32"):
        """The roof at an arithmetic intensity (FLOP/byte): min(peak, intensity × bandwidth), in
        GFLOP/s. Works elementwise on numpy arrays (the roofline plot draws it)."""
        roof = np.minimum(self.peak_for(dtype)[0], np.asarray(intensity, dtype=float) * self.bandwidth_gbs)
        return float(roof) if roof.ndim == 0 else roof

    def roof_ms(self, flops: int, bytes_moved: int, dtype: str = "float32") -> float:
        """The fastest the roof allows for this much work: max(FLOPs / peak, bytes / bandwidth), in ms."""
        return max(flops / (self.peak_for(dtype)[0] * 1e9), bytes_moved / (self.bandwidth_gbs * 1e9)) * 1e3

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

    @property
    def spread(self) -> float:
        return self.median / self.best - 1 if self.best > 0 else math.inf


def _time_reps(fn, reps: int, sync) -> _Timing:
    secs = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        secs.append(time.perf_counter() - t0)
    return _Timing(min(secs), statistics.median(secs))


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat (steal counts as busy); None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class _OtherLoad:
    """Share of the machine's CPU capacity used by *other* processes over an interval: the
    machine's busy time (/proc/stat) minus this process's CPU time, over wall time x CPUs."""

    def __init__(self) -> None:
        self.start = _cpu_jiffies()
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def share(self) -> float | None:
        end = _cpu_jiffies()
        if self.start is None or end is None:
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        busy_s = (end[0] - self.start[0]) / hz
        capacity_s = (end[1] - self.start[1]) / hz  # wall time x CPUs, as the kernel counts it
        ours = time.process_time() - self.cpu0
        return max(0.0, busy_s - ours) / capacity_s if capacity_s > 0 else None


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


def calibrate(device: str = "cpu", matmul_size: int = 2048, copy_mib: int = 256, reps: int = 5) -> Work[HardwareProfile]:
    """Measure peak matmul GFLOP/s per dtype and copy bandwidth on ``device`` (best of ``reps``).

    A measurement taken while other processes used more than ``MAX_OTHER_LOAD`` of the machine's
    CPU capacity (Linux: /proc/stat) or whose runs disagree by more than
    ``MAX_SPREAD`` carries a note; ``resolve_hardware`` does not cache such a profile."""
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
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    dtypes = ["float32", "bfloat16"] + (["float16"] if dev.type == "cuda" else [])
    steps = len(dtypes) + 1
    peaks: dict[str, float] = {}
    sizes: dict[str, int] = {}
    timings: list[tuple[str, _Timing]] = []
    load = _OtherLoad()
    for i, name in enumerate(dtypes):  # inference mode never held across a yield (see timing.measure)
        with torch.inference_mode():
            dt = getattr(torch, name)
            n = _matmul_size(dt, dev, matmul_size, sync)
            a = torch.randn(n, n, device=dev).to(dt)
            b = torch.randn(n, n, device=dev).to(dt)
            torch.mm(a, b)  # warm-up
            t = _time_reps(lambda a=a, b=b: torch.mm(a, b), reps, sync)
            peaks[name], sizes[name] = 2 * n**3 / t.best / 1e9, n
            timings.append((f"{name} matmul", t))
        yield Progress("calibrate", i + 1, steps, f"{name} matmul {n}x{n}: {peaks[name]:.1f} GFLOP/s")
    with torch.inference_mode():
        numel = copy_mib * 2**20 // 4
        src = torch.rand(numel, device=dev)
        dst = torch.empty_like(src)
        dst.copy_(src)
        t = _time_reps(lambda s=src, d=dst: d.copy_(s), reps, sync)
        bandwidth = 2 * src.nbytes / t.best / 1e9  # read + write
        timings.append(("copy", t))
        del src, dst
    yield Progress("calibrate", steps, steps, f"copy {copy_mib} MiB: {bandwidth:.1f} GB/s")
    notes = []
    other = load.share() if cpu else None
    busy = [f"other processes used {other:.0%} of the CPUs"] if other is not None and other > MAX_OTHER_LOAD else []
    noisy = [f"{what}: median {t.spread:.0%} over best" for what, t in timings if t.spread > MAX_SPREAD]
    if busy or noisy:
        notes.append("measured while the machine was busy (" + "; ".join(busy + noisy) + "): the roof may read low. "
                     "Not cached; run `layerscope calibrate` again when the machine is quiet.")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    return HardwareProfile(
        name=f"{name} (this machine)",
        peak_gflops={k: round(v, 2) for k, v in peaks.items()},
        bandwidth_gbs=round(bandwidth, 2),
        source=f"measured by layerscope calibrate: best of {reps} torch.mm per dtype "
        f"({', '.join(f'{k} {v}x{v}' for k, v in sizes.items())}); best of {reps} copies of {copy_mib} MiB (read+write bytes)",
        kind="measured",
        device=str(dev),
        measured_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        details={"host": socket.gethostname(), "threads": str(torch.get_num_threads()), "torch": torch.__version__,
                 **({"other load": f"{other:.2f}"} if other is not None else {})},
        notes=tuple(notes),
    )


def trusted(hw: HardwareProfile) -> bool:
    """A measurement clean enough to keep as this machine's roof."""
    return not hw.notes


def cache_path(device: str = "cpu") -> Path:
    return cache_root() / f"hardware-{socket.gethostname()}-{device.replace(':', '_')}.json"


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


def save_cached(hw: HardwareProfile) -> Path:
    p = cache_path(hw.device)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the cache folder {p.parent}: {exc.strerror or exc}.") from exc
    atomic_write_text(p, hw.to_json(), "calibration cache")
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
        else:
            log.warning("calibration not cached (measured under load): %s", "; ".join(hw.notes))
        if why:
            hw = dataclasses.replace(hw, notes=(*hw.notes, why))
    return hw
