"""The experiment history: every profile, compress and sweep run, with the model's identity, the
machine, the plan, the metrics, the per-layer numbers and a free-text note, in one database.

SQLite by default (``$XDG_DATA_HOME/layerscope/history.sqlite``), or any database URL SQLAlchemy
speaks (``postgresql://…`` for a team: install its driver). The URL comes from ``--history``, else
``$LAYERSCOPE_HISTORY``, else the default file. SQLAlchemy Core (already a dependency of Optuna,
which drives the sweep's search) gives one code path for both; SQLite runs in WAL mode with a busy
timeout, so several processes (a sweep's workers, a second terminal) write to it at once.

Never a silent new empty database: a file that is not SQLite, is damaged, or holds another
program's tables raises ``HistoryError`` naming the file; so does a database locked for longer
than the timeout. Tables::

    runs        one row per profile / compress / sweep run (config, plan, metrics, layers, note)
    candidates  one row per finished sweep candidate (unique per run and recipe key)
    sensitivity per-layer sensitivity rankings, reused by later sweeps of the same model and data
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import HistoryError

__all__ = ["RunRecord", "Record", "record_run", "profile_layers", "profile_metrics", "compare_runs", "headline", "LayerDiff",
           "default_url", "resolve_url", "model_fingerprint", "machine_name", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
HASH_FULL_BYTES = 2 * 2**30  # above this much weight data, hash names, shapes and a strided sample of the bytes

def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def default_url() -> str:
    root = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "layerscope"
    return f"sqlite:///{root / 'history.sqlite'}"


def resolve_url(given: str | None = None) -> str:
    """``given`` (a URL or a file path), else ``$LAYERSCOPE_HISTORY``, else the default SQLite file."""
    text = given or os.environ.get("LAYERSCOPE_HISTORY") or default_url()
    url = text if "://" in text else f"sqlite:///{Path(text).expanduser().resolve()}"
    if url.startswith("sqlite") and (url.split("://", 1)[1] in ("", "/", "/:memory:") or "mode=memory" in url):
        raise HistoryError(f"History database {text!r} is an in-memory SQLite database: nothing recorded there outlives this "
                           f"run. Give a file path (or --no-history to record nothing).")
    return url


def machine_name() -> str:
    """Host name, CPU and OS: where a number was measured."""
    return f"{socket.gethostname()} ({platform.processor() or platform.machine()}, {platform.system()} {platform.release()})"


def model_fingerprint(model: nn.Module) -> str:
    """A model's identity: names, shapes, dtypes and bytes of every parameter and buffer (blake2b,
    32 hex digits). Meta tensors contribute their structure only; above ``HASH_FULL_BYTES`` of data,
    a strided sample of each tensor's bytes stands in for all of them."""
    h = hashlib.blake2b(digest_size=16)
    tensors = sorted({**dict(model.named_parameters()), **dict(model.named_buffers())}.items())
    total = sum(t.numel() * t.element_size() for _, t in tensors if not t.is_meta)
    for name, t in tensors:
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        if t.is_meta or t.numel() == 0:
            continue
        flat = t.detach().reshape(-1).cpu()
        if total > HASH_FULL_BYTES:
            flat = flat[:: max(1, flat.numel() // 4096)]
        h.update(flat.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class RunRecord:
    id: int
    kind: str
    created: str
    status: str
    model: str
    model_hash: str
    machine: str
    plan: dict | None
    config: dict | None
    metrics: dict
    layers: dict | None
    note: str
    has_profile: bool

    def summary(self) -> str:
        """One line of headline numbers (the CLI's list and the app's history table)."""
        m: dict[str, float] = {k: v for k, v in self.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        parts = []  # numbers only: a damaged field is left out, never a crash
        if self.kind == "sweep":
            parts.append(f"{m.get('candidates', 0)} candidates, {m.get('passing', 0)} pass")
            if isinstance(best := self.metrics.get("best"), str) and best:
                parts.append(f"best: {best}")
        if m.get("latency_ms") is not None:
            parts.append(f"{m['latency_ms']:.3g} ms")
        if m.get("latency_ms_after") is not None and m.get("latency_ms_before") is not None:
            parts.append(f"{m['latency_ms_before']:.3g} → {m['latency_ms_after']:.3g} ms")
        if m.get("size_ratio") is not None:
            parts.append(f"size ×{m['size_ratio']:.3f}")
        if m.get("accuracy_after") is not None and m.get("accuracy_before") is not None:
            parts.append(f"top-1 {m['accuracy_before']:.1%} → {m['accuracy_after']:.1%}")
        if isinstance(m.get("output_sqnr_db"), (int, float)):
            parts.append(f"SQNR {m['output_sqnr_db']:.1f} dB")
        if m.get("flops") is not None and self.kind == "profile":
            parts.append(f"{m['flops'] / 1e9:.3g} GFLOPs, {m.get('layers', 0)} layers")
        return ", ".join(parts)


# --------------------------------------------------------------------------- what each run records
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
    import logging

    if record is None or not record.enabled:
        return
    from .history_store import HistoryStore  # SQLAlchemy loads only when a run is recorded (0.25 s at start-up otherwise)

    try:
        store = HistoryStore(record.url)
        try:
            record.run_id = store.add_run(kind, model, model_fingerprint(module), note=record.note, **fields())
        finally:
            store.close()
    except HistoryError as exc:
        record.error = str(exc)
        logging.getLogger(__name__).warning("the run was not recorded in the history: %s", exc)


@dataclass(frozen=True)
class LayerDiff:
    layer_id: str
    values: dict[str, tuple[Any, Any]]  # metric -> (run A, run B), for the metrics both runs have


def headline(run: RunRecord) -> dict[str, Any]:
    """The numbers every kind of run has, under one name each: the model as measured (a compress
    run: the compressed candidate; a sweep: how many candidates, how many pass)."""
    m = run.metrics
    if run.kind == "compress":
        return {"latency_ms": m.get("latency_ms_after"), "size_bytes": m.get("size_bytes_after"), "flops": m.get("flops_after"),
                "top1": m.get("accuracy_after"), "output_sqnr_db": m.get("output_sqnr_db")}
    if run.kind == "sweep":
        return {"candidates": m.get("candidates"), "passing": m.get("passing"), "best": m.get("best")}
    return {"latency_ms": m.get("latency_ms"), "size_bytes": m.get("weight_bytes"), "flops": m.get("flops"),
            "peak_memory_bytes": m.get("peak_memory_bytes"), "layers": m.get("layers")}


def compare_runs(a: RunRecord, b: RunRecord) -> tuple[dict[str, tuple[Any, Any]], list[LayerDiff], list[str], list[str]]:
    """Headline numbers (``headline``) that differ, the layers whose numbers differ (largest latency
    change first), and the layers only in A / only in B."""
    ha, hb = headline(a), headline(b)
    metrics = {k: (ha.get(k), hb.get(k)) for k in dict.fromkeys([*ha, *hb]) if ha.get(k) != hb.get(k)}
    la, lb = a.layers or {}, b.layers or {}
    diffs = []
    for lid in la:
        if lid not in lb:
            continue
        keys = [k for k in la[lid] if k in lb[lid] and k not in ("latency_ms_float", "weight_bytes_float")]
        keys += [k for k in ("technique",) if k not in keys and (la[lid].get(k) or lb[lid].get(k))]
        vals = {k: (la[lid].get(k), lb[lid].get(k)) for k in keys}
        if any(x != y for x, y in vals.values()):
            diffs.append(LayerDiff(lid, vals))

    def change(d: LayerDiff) -> float:
        x, y = d.values.get("latency_ms", (None, None))
        return abs(y - x) if isinstance(x, (int, float)) and isinstance(y, (int, float)) else 0.0

    diffs.sort(key=change, reverse=True)
    return metrics, diffs, [lid for lid in la if lid not in lb], [lid for lid in lb if lid not in la]
