"""Hardware profiles for the roofline: measured on this machine, or a target device's datasheet.

- ``profiles``: ``HardwareProfile`` (peak FLOP/s per dtype, bandwidth, the cache-aware roof) and the
  device profiles shipped in ``assets/devices``. A profile's ridge point = peak FLOP/s / bandwidth.
- ``calibration``: ``calibrate()``, the measurement of this machine.
- ``cache``: the calibration cached per host, device and thread count; ``resolve_hardware``.
"""

from .cache import cache_path, load_cached, load_provisional, merge_best, provisional_path, resolve_hardware, save_cached, save_provisional
from .calibration import CALIBRATION_VERSION, calibrate, theoretical_cpu_gflops
from .profiles import HardwareProfile, device_profile_names, load_device_profile, trusted

__all__ = ["HardwareProfile", "calibrate", "cache_path", "load_cached", "save_cached", "trusted", "device_profile_names",
           "load_device_profile", "resolve_hardware", "theoretical_cpu_gflops", "CALIBRATION_VERSION", "merge_best",
           "load_provisional", "save_provisional", "provisional_path"]
