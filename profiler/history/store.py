"""The history database itself (SQLAlchemy Core): the tables and ``HistoryStore``. Imported only where a
database is opened, so commands that record nothing never load SQLAlchemy; what the rest of LayerScope needs
about runs (``RunRecord``, ``Record``, fingerprints, comparisons) is in ``history.records``."""

from __future__ import annotations

import json
import socket
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc

from ..errors import HistoryError
from ..files.serde import to_jsonable
from .records import SCHEMA_VERSION, RunRecord, machine_name, now, resolve_url

__all__ = ["HistoryStore"]

BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process holding the database

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


def _dump(obj: Any) -> str | None:
    return None if obj is None else json.dumps(to_jsonable(obj), separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_MAX_NOTE = 4000
_MAX_ID = 2**63 - 1  # SQLite's INTEGER


def _check_id(run_id: Any, where: str) -> int:
    if type(run_id) is not int or not 1 <= run_id <= _MAX_ID:
        raise HistoryError(f"No run {str(run_id)[:40]} in {where}: run ids are whole numbers from 1 (`layerscope history` lists them).")
    return run_id


def check_note(note: Any) -> str:
    """A note is one short text: no control characters but line breaks and tabs, at most 4,000 characters."""
    if not isinstance(note, str) or len(note) > _MAX_NOTE:
        raise HistoryError(f"A run's note is text of at most {_MAX_NOTE:,} characters (got {len(str(note)):,}).")
    bad = next((c for c in note if (c < " " and c not in "\n\t") or c == "\x7f"), None)
    if bad is not None:
        raise HistoryError(f"A run's note cannot hold the control character U+{ord(bad):04X}; write it as plain text.")
    return note


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
        check_note(note)
        with self._errors(f"record a {kind} run"), self.engine.begin() as c:
            r = c.execute(_runs.insert().values(
                kind=kind, created=now(), status=status, model=model, model_hash=model_hash, machine=machine_name(),
                plan=_dump(plan), config=_dump(config), metrics=_dump(metrics or {}), layers=_dump(layers),
                profile=None if profile_json is None else zlib.compress(profile_json.encode(), 6), note=note))
            key = r.inserted_primary_key
            assert key is not None
            return int(key[0])

    def update_run(self, run_id: int, **values: Any) -> None:
        _check_id(run_id, self.where)
        if "note" in values:
            check_note(values["note"])
        row = {k: (_dump(v) if k in ("plan", "config", "metrics", "layers") else v) for k, v in values.items()}
        with self._errors(f"update run {run_id}"), self.engine.begin() as c:
            if c.execute(_runs.update().where(_runs.c.id == run_id).values(**row)).rowcount != 1:
                raise HistoryError(f"No run {run_id} in {self.where} (`layerscope history` lists them).")

    def set_note(self, run_id: int, note: str) -> None:
        self.update_run(run_id, note=note)

    def _record(self, row: Any) -> RunRecord:
        """A row as a record; a field another program damaged (text that is not JSON, a wrong type) leaves the
        run listed with status 'damaged (<field>)' and no numbers, instead of failing every listing."""
        fields: dict[str, Any] = {}
        damaged = []
        for name, kind in (("plan", dict), ("config", dict), ("metrics", dict), ("layers", dict)):
            try:
                value = _load(getattr(row, name))
            except (ValueError, TypeError, RecursionError):
                value = None
                damaged.append(name)
            if value is not None and not isinstance(value, kind):
                value = None
                damaged.append(name)
            fields[name] = value
        text = {k: getattr(row, k) if isinstance(getattr(row, k), str) else str(getattr(row, k) or "")
                for k in ("kind", "created", "status", "model", "model_hash", "machine", "note")}
        status = f"damaged ({', '.join(damaged)})" if damaged else text["status"]
        return RunRecord(int(row.id), text["kind"], text["created"], status, text["model"], text["model_hash"], text["machine"],
                         fields["plan"], fields["config"], fields["metrics"] or {}, fields["layers"], text["note"],
                         bool(row.has_profile))

    def _select(self):
        cols = [c for c in _runs.c if c.name != "profile"]
        return sa.select(*cols, (_runs.c.profile.is_not(None)).label("has_profile"))

    def run(self, run_id: int) -> RunRecord:
        _check_id(run_id, self.where)
        with self._errors(f"read run {run_id}"), self.engine.connect() as c:
            row = c.execute(self._select().where(_runs.c.id == run_id)).first()
        if row is None:
            raise HistoryError(f"No run {run_id} in {self.where} (`layerscope history` lists them).")
        return self._record(row)

    def runs(self, model: str | None = None, kind: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The latest runs first; ``model`` matches the spec, its hash, or a part of the spec."""
        q = self._select().order_by(_runs.c.id.desc()).limit(limit)
        if model:
            # '%' and '_' in the text are matched as themselves, not as LIKE wildcards
            q = q.where(sa.or_(_runs.c.model == model, _runs.c.model_hash == model, _runs.c.model.contains(model, autoescape=True)))
        if kind:
            q = q.where(_runs.c.kind == kind)
        with self._errors("list runs"), self.engine.connect() as c:
            return [self._record(r) for r in c.execute(q)]

    def profile_json(self, run_id: int) -> str | None:
        _check_id(run_id, self.where)
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
                    c.execute(_candidates.insert().values(run_id=run_id, key=key, created=now(), host=socket.gethostname(),
                                                          data=_dump(data)))
            except exc.IntegrityError:
                return False
        return True

    def candidates(self, run_id: int) -> list[dict]:
        with self._errors(f"read the candidates of run {run_id}"), self.engine.connect() as c:
            rows = c.execute(sa.select(_candidates.c.key, _candidates.c.host, _candidates.c.data)
                             .where(_candidates.c.run_id == run_id).order_by(_candidates.c.id)).all()
        out = []
        for r in rows:
            try:
                data = json.loads(r.data)
            except (ValueError, TypeError, RecursionError):
                data = None
            if not isinstance(data, dict):
                raise HistoryError(f"History database {self.where}: a candidate of run {run_id} ({str(r.key)[:60]!r}) is damaged; "
                                   f"the run cannot be shown. Other runs are unaffected.")
            out.append({**data, "key": r.key, "host": r.host})
        return out

    # ------------------------------------------------------------------ sensitivity
    def sensitivity(self, model_hash: str, key: str) -> Any:
        with self._errors("read a sensitivity ranking"), self.engine.connect() as c:
            text = c.execute(sa.select(_sensitivity.c.data).where(_sensitivity.c.model_hash == model_hash,
                                                                  _sensitivity.c.key == key)).scalar()
        return _load(text)

    def save_sensitivity(self, model_hash: str, key: str, data: Any) -> None:
        with self._errors("record a sensitivity ranking"), self.engine.begin() as c:
            c.execute(_sensitivity.delete().where(_sensitivity.c.model_hash == model_hash, _sensitivity.c.key == key))
            c.execute(_sensitivity.insert().values(model_hash=model_hash, key=key, created=now(), data=_dump(data)))

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; concurrent processes wait, not fail
    cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
