"""The append-only corrections table (SQLAlchemy Core; SQLite in WAL mode by default).

The embedded default is SQLite under ``MODEL_DIR`` with ``synchronous=FULL``: ``append``
commits before it returns, several processes may append at once, and triggers refuse
``UPDATE``/``DELETE`` even from raw SQL. Every column is portable (JSON and ids as TEXT), so a
server database (``postgresql://...``) can replace SQLite by URL alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from vrshq.backend.corrections.record import Correction, Id, norm_frame, norm_id, utc_now

DB_FILENAME = "corrections.sqlite3"
TABLE = "corrections"
SQLITE_BUSY_TIMEOUT_MS = 30_000


_metadata = sa.MetaData()
_table = sa.Table(
    TABLE, _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("project", sa.Text, nullable=False),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("annotation", sa.Text),
    sa.Column("annotator", sa.Text),
    sa.Column("video_path", sa.Text, nullable=False),
    sa.Column("video_sha256", sa.Text),
    sa.Column("fps", sa.Float),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("obj_id", sa.Text, nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("frame", sa.Integer, nullable=False),
    sa.Column("predicted_mask", sa.Text),  # JSON
    sa.Column("corrected_mask", sa.Text),  # JSON
    sa.Column("predicted_boxes", sa.Text),  # JSON
    sa.Column("corrected_boxes", sa.Text),  # JSON
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("plugin", sa.Text, nullable=False),
    sa.Column("annotated_at", sa.Text),
    sa.Column("corrected_clicks", sa.Text),  # JSON; added after the first release (_add_columns)
    sqlite_autoincrement=True,  # ids are never reused, even after a (refused) delete
)
sa.Index("ix_corrections_project_task", _table.c.project, _table.c.task)

_JSON_COLUMNS = ("predicted_mask", "corrected_mask", "predicted_boxes", "corrected_boxes", "corrected_clicks")
# Columns added since the table's first release: a log created before gets them (nullable TEXT).
_ADDED_COLUMNS = ("corrected_clicks",)
_ID_COLUMNS = ("project", "task", "annotation", "annotator", "obj_id")

_SQLITE_TRIGGERS = tuple(
    f"CREATE TRIGGER IF NOT EXISTS {TABLE}_no_{op.lower()} BEFORE {op} ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only: rows cannot be {verb}'); END"
    for op, verb in (("UPDATE", "updated"), ("DELETE", "deleted"))
)

# PostgreSQL (14+): one trigger function for both; TG_OP is UPDATE or DELETE.
_POSTGRES_TRIGGERS = (
    f"CREATE OR REPLACE FUNCTION {TABLE}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN RAISE EXCEPTION USING MESSAGE = '{TABLE} is append-only: rows cannot be ' "
    f"|| lower(TG_OP) || 'd'; END $$",  # no %: the driver reads it as a placeholder
    f"CREATE OR REPLACE TRIGGER {TABLE}_no_change BEFORE UPDATE OR DELETE ON {TABLE} "
    f"FOR EACH ROW EXECUTE FUNCTION {TABLE}_append_only()",
)


def _to_row(c: Correction, created_at: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for f in fields(Correction):
        if f.name == "id":
            continue
        value = getattr(c, f.name)
        if f.name in _JSON_COLUMNS:
            value = None if value is None else json.dumps(value, separators=(",", ":"))
        elif f.name in _ID_COLUMNS:
            value = None if value is None else str(value)
        row[f.name] = value
    row["created_at"] = created_at
    return row


def _add_columns(conn: sa.Connection) -> None:
    """Add the columns of :data:`_ADDED_COLUMNS` a log created by an older version lacks."""
    have = {c["name"] for c in sa.inspect(conn).get_columns(TABLE)}
    for name in _ADDED_COLUMNS:
        if name not in have:
            conn.exec_driver_sql(f"ALTER TABLE {TABLE} ADD COLUMN {name} TEXT")


def _from_row(row: Mapping[str, Any]) -> Correction:
    data = dict(row)
    for name in _JSON_COLUMNS:
        if data[name] is not None:
            data[name] = json.loads(data[name])
    return Correction(**data)  # ids come back as digit strings -> ints


def default_url(model_dir: str | os.PathLike) -> str:
    """The embedded default: ``sqlite:///<MODEL_DIR>/corrections.sqlite3`` (absolute path)."""
    return f"sqlite:///{Path(model_dir).expanduser().resolve() / DB_FILENAME}"


def public_url(url: str | sa.URL) -> str:
    """``url`` without user name and password (for manifests and messages)."""
    u = make_url(url)
    bare = sa.URL.create(u.drivername, host=u.host, port=u.port, database=u.database, query=u.query)
    return bare.render_as_string(hide_password=False)


# --- the log --------------------------------------------------------------------------------


class CorrectionsLog:
    """The append-only corrections table behind an SQLAlchemy URL.

    ``create=False`` opens an existing log only: a missing SQLite file or a database without
    the table raises :class:`FileNotFoundError` instead of creating it.
    """

    def __init__(self, url: str | sa.URL, *, create: bool = True) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            db = self.url.database
            if not db or db == ":memory:" or db.startswith("file:"):
                raise ValueError(f"the corrections log needs an SQLite file, got {public_url(self.url)}")
            path = Path(db)
            if not create and not path.is_file():
                raise FileNotFoundError(f"no corrections log at {path}")
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        self.engine: Engine = sa.create_engine(self.url, **kwargs)
        if self.is_sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_on_connect)
        try:
            if create:
                self._create_schema()
            elif not sa.inspect(self.engine).has_table(TABLE):
                raise FileNotFoundError(f"no {TABLE} table in {public_url(self.url)}")
        except BaseException:
            self.engine.dispose()
            raise

    @classmethod
    def for_model_dir(cls, model_dir: str | os.PathLike, *, create: bool = True) -> CorrectionsLog:
        """The embedded SQLite log under ``model_dir``."""
        return cls(default_url(model_dir), create=create)

    def _create_schema(self) -> None:
        # Several processes may open a fresh log at once: the loser of the race between the
        # existence check and CREATE gets an "already exists" error; its retry finds the table.
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    _metadata.create_all(conn, checkfirst=True)
                    _add_columns(conn)
                    if self.is_sqlite:
                        for ddl in _SQLITE_TRIGGERS:
                            conn.exec_driver_sql(ddl)
                    elif self.engine.dialect.name == "postgresql":
                        for ddl in _POSTGRES_TRIGGERS:
                            conn.exec_driver_sql(ddl)
                return
            except sa.exc.DBAPIError:
                if attempt == 2:
                    raise

    # writing

    def append(self, correction: Correction) -> int:
        """Store one correction in its own transaction, committed before returning; its id."""
        return self.append_many([correction])[0]

    def append_many(self, corrections: Iterable[Correction]) -> list[int]:
        """Store several corrections in one transaction (all or none); their ids in order."""
        return self._append(corrections, skip_repeats=False)

    def append_new(self, corrections: Iterable[Correction]) -> list[int]:
        """Like :meth:`append_many`, skipping each correction that repeats the newest logged one
        of its object and frame (same corrected mask and boxes); the ids of those stored.

        The check and the insert are one write transaction: checked in one transaction and
        inserted in another, the same annotation delivered twice at once (two threads or
        processes of the backend) was logged twice, both having found nothing logged yet.
        """
        return [i for i in self._append(corrections, skip_repeats=True) if i is not None]

    def append_new_each(self, corrections: Iterable[Correction]) -> list[int | None]:
        """Like :meth:`append_new`, one entry per correction: its new id, or None when it
        repeated the newest logged one and was skipped (so a caller acts only on what is new)."""
        return self._append(corrections, skip_repeats=True)

    def _append(self, corrections: Iterable[Correction], skip_repeats: bool) -> list[Any]:
        items = list(corrections)
        for c in items:
            if not isinstance(c, Correction):
                raise TypeError(f"expected a Correction, got {type(c).__name__}")
        if not items:
            return []
        created_at = utc_now()
        ids = []
        with self.engine.begin() as conn:
            if skip_repeats:
                self._lock_for_append(conn)
            for c in items:
                if skip_repeats:
                    latest = self._latest(conn, c.project, c.task, c.obj_id, c.frame)
                    if latest is not None and (latest.corrected_mask, latest.corrected_boxes,
                                               latest.corrected_clicks) == \
                            (c.corrected_mask, c.corrected_boxes, c.corrected_clicks):
                        ids.append(None)
                        continue
                result = conn.execute(_table.insert().values(**_to_row(c, created_at)))
                ids.append(int(result.inserted_primary_key[0]))
        return ids

    def _lock_for_append(self, conn: sa.Connection) -> None:
        # Serialise check-then-insert writers. SQLite: take the write lock before the first read
        # (pysqlite would only BEGIN a deferred transaction at the INSERT, after the check).
        # PostgreSQL: a table lock that conflicts with itself but not with readers.
        if self.is_sqlite:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif self.url.get_backend_name() == "postgresql":
            conn.exec_driver_sql(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")

    # reading

    def list(self, project: Id | None = None, task: Id | None = None,
             since_id: int | None = None, limit: int | None = None) -> list[Correction]:
        """Corrections in id order, optionally of one project/task, after ``since_id``."""
        return list(self.iter(project=project, task=task, since_id=since_id, limit=limit))

    def iter(self, project: Id | None = None, task: Id | None = None,
             since_id: int | None = None, limit: int | None = None,
             batch: int = 1000) -> Iterator[Correction]:
        """Like :meth:`list`, read lazily in batches of ``batch`` rows."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        last = since_id
        left = limit
        while left is None or left > 0:
            n = batch if left is None else min(batch, left)
            query = sa.select(_table).order_by(_table.c.id).limit(n)
            if project is not None:
                query = query.where(_table.c.project == str(norm_id("project", project)))
            if task is not None:
                query = query.where(_table.c.task == str(norm_id("task", task)))
            if last is not None:
                query = query.where(_table.c.id > last)
            with self.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
            for row in rows:
                yield _from_row(row)
            if len(rows) < n:
                return
            last = rows[-1]["id"]
            if left is not None:
                left -= len(rows)

    def count(self) -> int:
        """Number of corrections."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(_table)).scalar_one())

    def latest(self, project: Id, task: Id, obj_id: Id, frame: int,
               with_mask: bool = False) -> Correction | None:
        """The newest correction of one object on one frame of a task (``with_mask``: the newest
        with a corrected mask, not only boxes), or None."""
        with self.engine.connect() as conn:
            return self._latest(conn, project, task, obj_id, frame, with_mask)

    @staticmethod
    def _latest(conn: sa.Connection, project: Id, task: Id, obj_id: Id, frame: int,
                with_mask: bool = False) -> Correction | None:
        query = (sa.select(_table)
                 .where(_table.c.project == str(norm_id("project", project)),
                        _table.c.task == str(norm_id("task", task)),
                        _table.c.obj_id == str(norm_id("obj_id", obj_id)),
                        _table.c.frame == norm_frame("frame", frame))
                 .order_by(_table.c.id.desc()).limit(1))
        if with_mask:
            query = query.where(_table.c.corrected_mask.is_not(None))
        row = conn.execute(query).mappings().first()
        return None if row is None else _from_row(row)

    # lifetime

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CorrectionsLog({public_url(self.url)!r})"


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")  # WAL + FULL: a commit is fsynced before it returns
    finally:
        cur.close()


