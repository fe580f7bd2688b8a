"""Hardware profiles for the roofline: measured on this machine, or a target device's datasheet.

``calibrate()`` measures peak matmul FLOP/s (float32 and bfloat16) and streaming-copy bandwidth
here and caches the result; device profiles shipped in ``assets/devices`` carry their datasheet
source. A profile's ridge point (FLOP/byte) = peak FLOP/s / bandwidth.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from .errors import HardwareProfileError
from .progress import Progress, Work
from .serde import from_jsonable, to_jsonable

__all__ = [
    "HardwareProfile", "calibrate", "cache_path", "load_cached", "save_cached",
    "device_profile_names", "load_device_profile", "resolve_hardware",
]


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

    def peak_for(self, dtype: str) -> tuple[float, str]:
        """Peak GFLOP/s for ``dtype`` and which dtype's peak was used (float32 as fallback)."""
        if dtype in self.peak_gflops:
            return self.peak_gflops[dtype], dtype
        if "float32" in self.peak_gflops:
            return self.peak_gflops["float32"], "float32"
        raise HardwareProfileError(f"Hardware profile {self.name!r} has no peak for {dtype} or float32.")

    def ridge_point(self, dtype: str = "float32") -> float:
        """Arithmetic intensity (FLOP/byte) where the memory roof meets the compute roof."""
        return self.peak_for(dtype)[0] / self.bandwidth_gbs

    def to_json(self) -> str:
        return json.dumps(to_jsonable(self), indent=2)

    @classmethod
    def from_json(cls, text: str, origin: str = "hardware profile") -> HardwareProfile:
        try:
            hw = from_jsonable(cls, json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            raise HardwareProfileError(f"{origin} is not a valid hardware profile: {exc}") from None
        if hw.bandwidth_gbs <= 0 or not hw.peak_gflops or any(v <= 0 for v in hw.peak_gflops.values()):
            raise HardwareProfileError(f"{origin}: peak_gflops and bandwidth_gbs must be positive.")
        return hw


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _best_seconds(fn, reps: int, sync) -> float:
    best = float("inf")
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def calibrate(device: str = "cpu", matmul_size: int = 2048, copy_mib: int = 256, reps: int = 5) -> Work[HardwareProfile]:
    """Measure peak matmul GFLOP/s per dtype and copy bandwidth on ``device`` (best of ``reps``)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HardwareProfileError("calibrate --device cuda: no CUDA device is available here.")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    dtypes = ["float32", "bfloat16"] + (["float16"] if dev.type == "cuda" else [])
    steps = len(dtypes) + 1
    peaks: dict[str, float] = {}
    for i, name in enumerate(dtypes):  # inference mode never held across a yield (see timing.measure)
        with torch.inference_mode():
            dt = getattr(torch, name)
            n = matmul_size
            a = torch.randn(n, n, device=dev).to(dt)
            b = torch.randn(n, n, device=dev).to(dt)
            torch.mm(a, b)  # warm-up
            secs = _best_seconds(lambda a=a, b=b: torch.mm(a, b), reps, sync)
            peaks[name] = 2 * n**3 / secs / 1e9
        yield Progress("calibrate", i + 1, steps, f"{name} matmul {n}x{n}: {peaks[name]:.1f} GFLOP/s")
    with torch.inference_mode():
        numel = copy_mib * 2**20 // 4
        src = torch.rand(numel, device=dev)
        dst = torch.empty_like(src)
        dst.copy_(src)
        secs = _best_seconds(lambda: dst.copy_(src), reps, sync)
        bandwidth = 2 * src.nbytes / secs / 1e9  # read + write
    yield Progress("calibrate", steps, steps, f"copy {copy_mib} MiB: {bandwidth:.1f} GB/s")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name()
    return HardwareProfile(
        name=f"{name} (this machine)",
        peak_gflops={k: round(v, 2) for k, v in peaks.items()},
        bandwidth_gbs=round(bandwidth, 2),
        source=f"measured by layerscope calibrate: best of {reps} {matmul_size}x{matmul_size} torch.mm per dtype; "
        f"best of {reps} copies of {copy_mib} MiB (read+write bytes)",
        kind="measured",
        device=str(dev),
        measured_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        details={"host": socket.gethostname(), "threads": str(torch.get_num_threads()), "torch": torch.__version__},
    )


def cache_path(device: str = "cpu") -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "layerscope" / f"hardware-{socket.gethostname()}-{device.replace(':', '_')}.json"


def load_cached(device: str = "cpu") -> HardwareProfile | None:
    p = cache_path(device)
    if not p.is_file():
        return None
    try:
        return HardwareProfile.from_json(p.read_text(), str(p))
    except HardwareProfileError:
        return None  # a stale or broken cache is simply re-measured


def save_cached(hw: HardwareProfile) -> Path:
    p = cache_path(hw.device)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(hw.to_json())
    return p


def _devices_dir():
    return resources.files("layerscope.assets") / "devices"


def device_profile_names() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in _devices_dir().iterdir() if p.name.endswith(".json"))


def load_device_profile(name_or_path: str) -> HardwareProfile:
    """A shipped device profile by name (see ``device_profile_names``) or a JSON file path."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            raise HardwareProfileError(f"Hardware profile file not found: {path}.")
        return HardwareProfile.from_json(path.read_text(), str(path))
    res = _devices_dir() / f"{name_or_path}.json"
    if not res.is_file():
        raise HardwareProfileError(f"Unknown device profile {name_or_path!r}; shipped: {', '.join(device_profile_names())}, or pass a .json file.")
    return HardwareProfile.from_json(res.read_text(), f"device profile {name_or_path}")


def resolve_hardware(target: str | None, device: str = "cpu", recalibrate: bool = False) -> Work[HardwareProfile]:
    """``target`` None/"this": this machine (cached calibration, measured on first use)."""
    if target not in (None, "", "this"):
        return load_device_profile(target)
    hw = None if recalibrate else load_cached(device)
    if hw is None:
        hw = yield from calibrate(device)
        save_cached(hw)
    return hw
