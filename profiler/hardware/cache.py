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

__all__ = ["cache_path", "provisional_path", "load_cached", "load_provisional", "save_cached", "save_provisional", "merge_best",
           "resolve_hardware", "PROVISIONAL_NOTE"]

log = logging.getLogger(__name__)


def cache_path(device: str = "cpu") -> Path:
    """One cache per host, device and (on a CPU) thread count: the roof scales with the threads."""
    threads = f"-t{torch.get_num_threads()}" if device.startswith("cpu") else ""
    return cache_root() / f"hardware-{socket.gethostname()}-{device.replace(':', '_')}{threads}.json"


PROVISIONAL_NOTE = ("provisional roof: measured while the machine was busy and kept until a clean calibration replaces it, "
                    "so every run here uses the same roof; run `layerscope calibrate` when the machine is quiet")


def provisional_path(device: str = "cpu") -> Path:
    """The first calibration measured on a busy machine, kept until a clean one exists (``resolve_hardware``)."""
    p = cache_path(device)
    return p.with_name(f"{p.stem}.provisional.json")


def _read(p: Path, clean: bool) -> tuple[HardwareProfile | None, str]:
    """The calibration in ``p``, or None and why not. Unreadable (corrupt JSON, bad UTF-8, NaN/zero roofs, a folder
    where the file should be), measured by an older method or under another torch: moved aside, to be measured again."""
    if not p.exists() and not p.is_symlink():
        return None, ""
    try:
        if not p.is_file():
            raise HardwareProfileError(f"{p} is not a file")
        hw = HardwareProfile.from_json(p.read_bytes(), f"calibration cache {p}")
        if clean and not trusted(hw):
            raise HardwareProfileError("it was measured on a busy machine")
        if hw.details.get("calibration") != calibration.CALIBRATION_VERSION:
            raise HardwareProfileError("it was measured by an older calibration (matmul only)")
        if hw.details.get("torch", torch.__version__) != torch.__version__:
            raise HardwareProfileError(f"it was measured under torch {hw.details['torch']}, and this is {torch.__version__}")
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


def load_cached(device: str = "cpu") -> tuple[HardwareProfile | None, str]:
    """The cached clean calibration, or None and why not (see ``_read``)."""
    return _read(cache_path(device), clean=True)


def load_provisional(device: str = "cpu") -> tuple[HardwareProfile | None, str]:
    """The provisional calibration (measured on a busy machine), with the note that says so, or None and why not."""
    hw, why = _read(provisional_path(device), clean=False)
    return (dataclasses.replace(hw, notes=(*hw.notes, PROVISIONAL_NOTE)) if hw is not None else None), why


def save_provisional(hw: HardwareProfile) -> Path | None:
    """Keep a busy calibration as this machine's provisional roof when neither a clean nor a provisional one exists
    (the first is kept: two busy runs use the same roof); None when one does."""
    p = provisional_path(hw.device)
    if p.exists() or cache_path(hw.device).exists():
        return None
    _mkdir(p.parent)
    atomic_write_text(p, hw.to_json(), "calibration cache")
    return p


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the cache folder {folder}: {exc.strerror or exc}.") from exc


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
    _mkdir(p.parent)
    old, _ = load_cached(hw.device)
    atomic_write_text(p, (merge_best(old, hw) if old is not None else hw).to_json(), "calibration cache")
    provisional_path(hw.device).unlink(missing_ok=True)  # a clean roof replaces the provisional one
    return p


def resolve_hardware(target: str | None, device: str = "cpu", recalibrate: bool = False) -> Work[HardwareProfile]:
    """``target`` None/"this": this machine (cached calibration, measured on first use).

    The roof stays put: the best clean calibration is cached and used on a busy machine too; the first calibration
    measured on a busy machine is kept as provisional (and says so) until a clean one replaces it, so two busy runs
    use the same roof. Measured again only on request (``recalibrate``, ``layerscope calibrate``), or when the
    cache is unusable (another calibration method, another torch)."""
    if target not in (None, "", "this"):
        return load_device_profile(target)
    hw, why = (None, "") if recalibrate else load_cached(device)
    if hw is None and not recalibrate:
        hw, why_not = load_provisional(device)
        why = why or why_not
    if hw is not None:
        log.info("roofline of this machine from the calibration cache %s", cache_path(device))
    else:
        log.info("calibrating %s%s", device, f" ({why})" if why else "")
        hw = yield from calibration.calibrate(device)
        if trusted(hw):
            log.info("calibration cached at %s", save_cached(hw))
            hw = load_cached(device)[0] or hw  # the best of this and earlier clean calibrations
        elif (kept := save_provisional(hw)) is not None:
            log.warning("calibration measured under load, kept as provisional at %s: %s", kept, "; ".join(hw.notes))
            hw = dataclasses.replace(hw, notes=(*hw.notes, PROVISIONAL_NOTE))
        else:
            log.warning("calibration not cached (measured under load): %s", "; ".join(hw.notes))
        if why:
            hw = dataclasses.replace(hw, notes=(*hw.notes, why))
    return hw
