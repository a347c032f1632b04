"""Schema creation and migration, as an ordered list of functions (sqlite-utils / llm style).

A fresh database gets `create_all` and is stamped with SCHEMA_VERSION; an older one runs
MIGRATIONS[v - 1:] in order. Both happen under a lock (SQLite's write lock via BEGIN IMMEDIATE,
a PostgreSQL advisory lock), so concurrent first starts cannot race; a newer schema is refused.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from haares.errors import HaaresError
from haares.jobs.db import read_tx, run_write
from haares.jobs.schema import JOBS_QUEUED_INDEX, SCHEMA_VERSION, Base, GridRun, Meta

VERSION_KEY = "schema_version"
PG_LOCK_KEY = 0x6861_6172  # "haar": any constant shared by every haares process


def _v1_to_v2(conn: Connection) -> None:
    """Add jobs.fresh_start (`retry --fresh`), the partial claim index and grid_runs(job_id)."""
    conn.execute(sa.text("ALTER TABLE jobs ADD COLUMN fresh_start BOOLEAN NOT NULL DEFAULT false"))
    JOBS_QUEUED_INDEX.create(conn, checkfirst=True)
    for index in GridRun.__table__.indexes:
        index.create(conn, checkfirst=True)


def _v2_to_v3(conn: Connection) -> None:
    """Record where a job's checkpoint is (host, folder, step) on the job and its attempts, and a note."""
    for table, column, kind in [("jobs", "ckpt_host", "VARCHAR(255)"), ("jobs", "ckpt_dir", "TEXT"),
                                ("jobs", "ckpt_step", "INTEGER"), ("jobs", "note", "TEXT"),
                                ("attempts", "ckpt_dir", "TEXT"), ("attempts", "ckpt_step", "INTEGER")]:
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} {kind}"))


MIGRATIONS: list[Callable[[Connection], None]] = [_v1_to_v2, _v2_to_v3]
"""MIGRATIONS[i] takes a database from version i + 1 to i + 2."""
assert len(MIGRATIONS) == SCHEMA_VERSION - 1, "append a migration when bumping SCHEMA_VERSION"


def schema_version(conn: Connection) -> int:
    """The database's schema version; 0 for an empty database."""
    if not sa.inspect(conn).has_table(Meta.__tablename__):
        return 0
    raw = conn.execute(sa.select(Meta.value).where(Meta.key == VERSION_KEY)).scalar_one_or_none()
    return int(raw) if raw is not None else 0


def _refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise HaaresError(
            f"the database has schema version {version}, newer than this haares ({SCHEMA_VERSION}); "
            "upgrade haares on this host"
        )


def check_schema(engine: Engine) -> int | None:
    """For a read-only opening: None when the schema is current, the older version found otherwise.

    HaaresError for an empty database (no haares tables) or a newer schema.
    """
    with read_tx(engine) as conn:
        found = schema_version(conn)
    if found == 0:
        raise HaaresError("the database holds no haares queue yet; `haares enqueue --grid NAME` creates it")
    _refuse_newer(found)
    return None if found == SCHEMA_VERSION else found


def migrate(engine: Engine, *, create: bool = True) -> int:
    """Create (unless not `create`) or upgrade the schema to SCHEMA_VERSION; returns the version found before."""
    with read_tx(engine) as conn:
        found = schema_version(conn)
    _refuse_newer(found)
    if found == 0 and not create:
        raise HaaresError("the database holds no haares queue yet; `haares enqueue --grid NAME` creates it")
    if found == SCHEMA_VERSION:
        return found

    def body(conn: Connection) -> int:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
        version = schema_version(conn)  # re-read under the lock: another process may have won
        _refuse_newer(version)
        if version == 0:
            Base.metadata.create_all(conn)
        else:
            for step in MIGRATIONS[version - 1 :]:
                step(conn)
        if version != SCHEMA_VERSION:
            _stamp(conn, version)
        return version

    return run_write(engine, body)


def _stamp(conn: Connection, had: int) -> None:
    if had == 0:
        conn.execute(sa.insert(Meta).values(key=VERSION_KEY, value=str(SCHEMA_VERSION)))
    else:
        conn.execute(sa.update(Meta).where(Meta.key == VERSION_KEY).values(value=str(SCHEMA_VERSION)))
