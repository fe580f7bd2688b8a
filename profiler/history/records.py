"""Runs as LayerScope reads them: ``RunRecord``, the database URL, the model fingerprint and the
machine name, and how two runs compare. No SQLAlchemy here (``store`` opens the database)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import HistoryError

__all__ = ["RunRecord", "compare_runs", "headline", "LayerDiff",
           "default_url", "resolve_url", "model_fingerprint", "machine_name", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
HASH_FULL_BYTES = 2 * 2**30  # above this much weight data, hash names, shapes and a strided sample of the bytes

def now() -> str:
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
