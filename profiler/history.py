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
import json
import os
import platform
import socket
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import torch
from sqlalchemy import event, exc
from torch import nn

from .errors import HistoryError
from .serde import to_jsonable

__all__ = ["HistoryStore", "RunRecord", "Record", "record_run", "profile_layers", "profile_metrics", "compare_runs", "headline", "LayerDiff",
           "default_url", "resolve_url", "model_fingerprint", "machine_name", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
HASH_FULL_BYTES = 2 * 2**30  # above this much weight data, hash names, shapes and a strided sample of the bytes

_meta = sa.MetaData()
_info = sa.Table("layerscope_info", _meta, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text))
_runs = sa.Table(
    "runs", _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # profile | compress | sweep
    sa.Column("created", sa.String(32), nullable=False),  # UTC, ISO 8601
    sa.Column("status", sa.String(16), nullable=False),  # done | running | interrupted | failed
    sa.Column("model", sa.Text, nullable=False),  # the spec the user gave (zoo name, file.py:factory, .pt2)
    sa.Column("model_hash", sa.String(64), nullable=False),
    sa.Column("machine", sa.Text, nullable=False),
    sa.Column("plan", sa.Text),  # JSON, compress runs
    sa.Column("config", sa.Text),  # JSON: the request, budgets, search space
    sa.Column("metrics", sa.Text),  # JSON: headline numbers
    sa.Column("layers", sa.Text),  # JSON: {layer id: {metric: value}} for layer-by-layer comparison
    sa.Column("profile", sa.LargeBinary),  # Profile JSON, zlib-compressed (~10x: a 10,000-layer profile is 16 MB of text)
    sa.Column("note", sa.Text, nullable=False, default=""),
)
_candidates = sa.Table(
    "candidates", _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("key", sa.Text, nullable=False),  # the recipe's canonical text: resume skips keys already here
    sa.Column("created", sa.String(32), nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),  # JSON: recipe, plan, metrics, checks
    sa.UniqueConstraint("run_id", "key"),
)
_sensitivity = sa.Table(
    "sensitivity", _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_hash", sa.String(64), nullable=False),
    sa.Column("key", sa.Text, nullable=False),  # data, technique and strength the ranking was measured with
    sa.Column("created", sa.String(32), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.UniqueConstraint("model_hash", "key"),
)
_OURS = {"layerscope_info", "runs", "candidates", "sensitivity"}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def default_url() -> str:
    root = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "layerscope"
    return f"sqlite:///{root / 'history.sqlite'}"


def resolve_url(given: str | None = None) -> str:
    """``given`` (a URL or a file path), else ``$LAYERSCOPE_HISTORY``, else the default SQLite file."""
    text = given or os.environ.get("LAYERSCOPE_HISTORY") or default_url()
    return text if "://" in text else f"sqlite:///{Path(text).expanduser().resolve()}"


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
        m = self.metrics
        parts = []
        if self.kind == "sweep":
            parts.append(f"{m.get('candidates', 0)} candidates, {m.get('passing', 0)} pass")
            if m.get("best"):
                parts.append(f"best: {m['best']}")
        if m.get("latency_ms") is not None:
            parts.append(f"{m['latency_ms']:.3g} ms")
        if m.get("latency_ms_after") is not None:
            parts.append(f"{m['latency_ms_before']:.3g} → {m['latency_ms_after']:.3g} ms")
        if m.get("size_ratio") is not None:
            parts.append(f"size ×{m['size_ratio']:.3f}")
        if m.get("accuracy_after") is not None:
            parts.append(f"top-1 {m['accuracy_before']:.1%} → {m['accuracy_after']:.1%}")
        if isinstance(m.get("output_sqnr_db"), (int, float)):
            parts.append(f"SQNR {m['output_sqnr_db']:.1f} dB")
        if m.get("flops") is not None and self.kind == "profile":
            parts.append(f"{m['flops'] / 1e9:.3g} GFLOPs, {m.get('layers', 0)} layers")
        return ", ".join(parts)


def _dump(obj: Any) -> str | None:
    return None if obj is None else json.dumps(to_jsonable(obj), separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class HistoryStore:
    """One experiment database. ``HistoryStore(url)`` opens (creating an empty SQLite file only
    where none exists) and checks it; every method is one short transaction."""

    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        self.where = self.url.removeprefix("sqlite:///") if self.url.startswith("sqlite:///") else self.url
        sqlite = self.url.startswith("sqlite")
        if sqlite and self.url.startswith("sqlite:///"):
            Path(self.where).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = sa.create_engine(self.url, connect_args={"timeout": BUSY_TIMEOUT_S} if sqlite else {},
                                           pool_pre_ping=not sqlite)
        except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as e:
            raise HistoryError(f"History database URL {self.url!r} is not usable: {e}. Use a file path or a URL such as "
                               f"sqlite:///path/history.sqlite or postgresql://user@host/db (with its driver installed).") from e
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        with self._errors("open"):
            self._check_and_create(sqlite)

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except exc.OperationalError as e:
            text = str(e.orig) if e.orig is not None else str(e)
            if "locked" in text or "busy" in text:
                raise HistoryError(f"History database {self.where} stayed locked by another process for {BUSY_TIMEOUT_S:.0f} s "
                                   f"while trying to {doing}; nothing was lost. Wait for that process, or give another "
                                   f"database with --history.") from e
            raise HistoryError(f"History database {self.where}: cannot {doing}: {text}. Check the path or URL and its "
                               f"permissions.") from e
        except exc.DatabaseError as e:
            text = str(e.orig) if e.orig is not None else str(e)
            raise HistoryError(f"History database {self.where} is damaged or not a database ({text}); LayerScope will not "
                               f"replace it. Move it aside (its runs stay in it) or give another one with --history.") from e

    def _check_and_create(self, sqlite: bool) -> None:
        with self.engine.begin() as c:
            if sqlite:
                ok = c.exec_driver_sql("PRAGMA quick_check").scalar()
                if ok != "ok":
                    raise HistoryError(f"History database {self.where} fails SQLite's integrity check ({ok}); LayerScope will not "
                                       f"replace it. Move it aside or give another one with --history.")
            tables = set(sa.inspect(c).get_table_names())
            if tables and "layerscope_info" not in tables:
                raise HistoryError(f"{self.where} is a database of another program (tables: {', '.join(sorted(tables)[:5])}); "
                                   f"LayerScope writes its history only into its own. Give another path with --history.")
            if "layerscope_info" in tables:
                version = c.execute(sa.select(_info.c.value).where(_info.c.key == "schema")).scalar()
                if version is None or int(version) > SCHEMA_VERSION:
                    raise HistoryError(f"History database {self.where} has schema {version}, newer than this LayerScope "
                                       f"({SCHEMA_VERSION}): upgrade LayerScope, or give another database with --history.")
                missing = _OURS - tables
                if missing:
                    raise HistoryError(f"History database {self.where} lacks tables {', '.join(sorted(missing))}: it is damaged. "
                                       f"Move it aside or give another one with --history.")
                return
            _meta.create_all(c)
            c.execute(_info.insert().values(key="schema", value=str(SCHEMA_VERSION)))

    # ------------------------------------------------------------------ runs
    def add_run(self, kind: str, model: str, model_hash: str, *, status: str = "done", plan: Any = None, config: Any = None,
                metrics: Any = None, layers: Any = None, profile_json: str | None = None, note: str = "") -> int:
        with self._errors(f"record a {kind} run"), self.engine.begin() as c:
            r = c.execute(_runs.insert().values(
                kind=kind, created=_now(), status=status, model=model, model_hash=model_hash, machine=machine_name(),
                plan=_dump(plan), config=_dump(config), metrics=_dump(metrics or {}), layers=_dump(layers),
                profile=None if profile_json is None else zlib.compress(profile_json.encode(), 6), note=note))
            key = r.inserted_primary_key
            assert key is not None
            return int(key[0])

    def update_run(self, run_id: int, **values: Any) -> None:
        row = {k: (_dump(v) if k in ("plan", "config", "metrics", "layers") else v) for k, v in values.items()}
        with self._errors(f"update run {run_id}"), self.engine.begin() as c:
            if c.execute(_runs.update().where(_runs.c.id == run_id).values(**row)).rowcount != 1:
                raise HistoryError(f"No run {run_id} in {self.where} (`layerscope history` lists them).")

    def set_note(self, run_id: int, note: str) -> None:
        self.update_run(run_id, note=note)

    def _record(self, row: Any) -> RunRecord:
        return RunRecord(row.id, row.kind, row.created, row.status, row.model, row.model_hash, row.machine, _load(row.plan),
                         _load(row.config), _load(row.metrics) or {}, _load(row.layers), row.note or "", row.has_profile)

    def _select(self):
        cols = [c for c in _runs.c if c.name != "profile"]
        return sa.select(*cols, (_runs.c.profile.is_not(None)).label("has_profile"))

    def run(self, run_id: int) -> RunRecord:
        with self._errors(f"read run {run_id}"), self.engine.connect() as c:
            row = c.execute(self._select().where(_runs.c.id == run_id)).first()
        if row is None:
            raise HistoryError(f"No run {run_id} in {self.where} (`layerscope history` lists them).")
        return self._record(row)

    def runs(self, model: str | None = None, kind: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The latest runs first; ``model`` matches the spec, its hash, or a part of the spec."""
        q = self._select().order_by(_runs.c.id.desc()).limit(limit)
        if model:
            q = q.where(sa.or_(_runs.c.model == model, _runs.c.model_hash == model, _runs.c.model.contains(model)))
        if kind:
            q = q.where(_runs.c.kind == kind)
        with self._errors("list runs"), self.engine.connect() as c:
            return [self._record(r) for r in c.execute(q)]

    def profile_json(self, run_id: int) -> str | None:
        with self._errors(f"read run {run_id}"), self.engine.connect() as c:
            blob = c.execute(sa.select(_runs.c.profile).where(_runs.c.id == run_id)).scalar()
        if blob is None or isinstance(blob, str):  # a profile stored as plain text (before compression) reads as is
            return blob
        try:
            return zlib.decompress(blob).decode()
        except (zlib.error, UnicodeDecodeError) as e:
            raise HistoryError(f"History database {self.where}: run {run_id}'s stored profile is damaged ({e}).") from e

    # ------------------------------------------------------------------ sweep candidates
    def add_candidate(self, run_id: int, key: str, data: Any) -> bool:
        """Record a finished candidate; False when that recipe was already recorded for the run (kept)."""
        with self._errors(f"record a candidate of run {run_id}"), self.engine.begin() as c:
            try:
                with c.begin_nested():
                    c.execute(_candidates.insert().values(run_id=run_id, key=key, created=_now(), host=socket.gethostname(),
                                                          data=_dump(data)))
            except exc.IntegrityError:
                return False
        return True

    def candidates(self, run_id: int) -> list[dict]:
        with self._errors(f"read the candidates of run {run_id}"), self.engine.connect() as c:
            rows = c.execute(sa.select(_candidates.c.key, _candidates.c.host, _candidates.c.data)
                             .where(_candidates.c.run_id == run_id).order_by(_candidates.c.id))
            return [{**json.loads(r.data), "key": r.key, "host": r.host} for r in rows]

    def candidate_keys(self, run_id: int) -> set[str]:
        with self._errors(f"read the candidates of run {run_id}"), self.engine.connect() as c:
            return set(c.execute(sa.select(_candidates.c.key).where(_candidates.c.run_id == run_id)).scalars())

    # ------------------------------------------------------------------ sensitivity
    def sensitivity(self, model_hash: str, key: str) -> Any:
        with self._errors("read a sensitivity ranking"), self.engine.connect() as c:
            text = c.execute(sa.select(_sensitivity.c.data).where(_sensitivity.c.model_hash == model_hash,
                                                                  _sensitivity.c.key == key)).scalar()
        return _load(text)

    def save_sensitivity(self, model_hash: str, key: str, data: Any) -> None:
        with self._errors("record a sensitivity ranking"), self.engine.begin() as c:
            c.execute(_sensitivity.delete().where(_sensitivity.c.model_hash == model_hash, _sensitivity.c.key == key))
            c.execute(_sensitivity.insert().values(model_hash=model_hash, key=key, created=_now(), data=_dump(data)))

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; concurrent processes wait, not fail
    cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


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


def record_run(record: Record | None, kind: str, model: str, module: nn.Module, **fields: Any) -> None:
    """Record a finished run (see ``Record``); a failure to record is logged and kept in ``record.error``."""
    import logging

    if record is None or not record.enabled:
        return
    try:
        store = HistoryStore(record.url)
        try:
            record.run_id = store.add_run(kind, model, model_fingerprint(module), note=record.note, **fields)
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
