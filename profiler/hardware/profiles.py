"""``HardwareProfile``: the roof (peak FLOP/s per dtype, bandwidth per working set), measured here or
taken from a device datasheet, and the device profiles shipped in ``assets/devices``."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import HardwareProfileError
from ..files.safeio import parse_json, positive, read_json
from ..files.serde import from_jsonable, to_jsonable

__all__ = ["HardwareProfile", "trusted", "device_profile_names", "load_device_profile"]

_KINDS = ("measured", "datasheet")
_DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64", "int8", "float8")

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

    def slower_roof(self, intensity, dtype: str = "float32") -> tuple[str, np.ndarray, np.ndarray] | None:
        """The slower of several measured bandwidths (a copy's read+write vs a read-only sum) as a second,
        lower memory roof: its name, and the intensities (of ``intensity``) below where it meets the
        compute peak with the GFLOP/s it allows there. None when one bandwidth was measured."""
        if len(self.bandwidths_gbs) < 2:
            return None
        name, gbs = min(self.bandwidths_gbs.items(), key=lambda kv: kv[1])
        x = np.asarray(intensity, dtype=float)
        x = x[x * gbs < self.peak_for(dtype)[0]]
        return name, x, x * gbs

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


def trusted(hw: HardwareProfile) -> bool:
    """A measurement clean enough to keep as this machine's roof."""
    return not hw.notes


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
