"""This machine's roof, calibrated once and cached per host, device and thread count (only clean
measurements, the best of them kept), and ``resolve_hardware``: the roof a job uses."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import socket
from pathlib import Path

import torch

from ..errors import HardwareProfileError, OutputError
from ..files.safeio import atomic_write_text
from ..files.workspace import cache_root
from ..progress import Work
from . import calibration
from .profiles import HardwareProfile, load_device_profile, trusted

__all__ = ["cache_path", "load_cached", "save_cached", "merge_best", "resolve_hardware"]

log = logging.getLogger(__name__)


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
        if hw.details.get("calibration") != calibration.CALIBRATION_VERSION:
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
        hw = yield from calibration.calibrate(device)
        if trusted(hw):
            log.info("calibration cached at %s", save_cached(hw))
            hw = load_cached(device)[0] or hw  # the best of this and earlier clean calibrations
        else:
            log.warning("calibration not cached (measured under load): %s", "; ".join(hw.notes))
        if why:
            hw = dataclasses.replace(hw, notes=(*hw.notes, why))
    return hw
