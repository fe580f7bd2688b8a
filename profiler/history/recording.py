"""How a job records its run: ``Record`` (where, and what happened) and ``record_run``, which opens the
store only when a run is recorded (SQLAlchemy costs 0.25 s at start-up otherwise)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import HistoryError
from .records import model_fingerprint

__all__ = ["Record", "record_run", "profile_layers", "profile_metrics"]

log = logging.getLogger(__name__)


@dataclass
class Record:
    """Where a job records its run, and what happened: ``url`` None = the default database;
    ``enabled`` False = not recorded. The job fills ``run_id``, or ``error`` when recording failed
    (the job's result is returned all the same: a full disk never costs a user their profile)."""

    url: str | None = None
    note: str = ""
    enabled: bool = True
    run_id: int | None = None
    error: str | None = None


def profile_layers(profile: Any) -> dict[str, dict[str, Any]]:
    """Per layer of a Profile: type, latency, FLOPs, weight bytes and bound class."""
    out = {}
    for r in profile.rows():
        t = r.timing
        out[r.layer.id] = {"type": r.layer.type_name, "latency_ms": t.latency_ms if t else None, "flops": r.metrics.flops,
                           "weight_bytes": r.metrics.weight_bytes, "bound": r.bound.value}
    return out


def profile_metrics(profile: Any) -> dict[str, Any]:
    s = profile.summary
    return {"latency_ms": None if profile.static else s.end_to_end_ms, "flops": profile.total_flops, "layers": len(profile.graph),
            "weight_bytes": profile.model.total_weight_bytes, "peak_memory_bytes": s.peak_memory_bytes, "static": profile.static,
            "hardware": profile.hardware.name}


def record_run(record: Record | None, kind: str, model: str, module: nn.Module, fields: Callable[[], dict[str, Any]]) -> None:
    """Record a finished run (see ``Record``); a failure to record is logged and kept in ``record.error``.
    ``fields()`` (``HistoryStore.add_run``'s plan, config, metrics, layers, profile_json) is built only when the
    run is recorded: a profile's JSON and per-layer table cost nothing with ``--no-history``."""
    if record is None or not record.enabled:
        return
    from .store import HistoryStore  # SQLAlchemy loads only when a run is recorded (0.25 s at start-up otherwise)

    try:
        store = HistoryStore(record.url)
        try:
            record.run_id = store.add_run(kind, model, model_fingerprint(module), note=record.note, **fields())
        finally:
            store.close()
    except HistoryError as exc:
        record.error = str(exc)
        log.warning("the run was not recorded in the history: %s", exc)
