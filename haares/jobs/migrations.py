"""Schema creation and migration, as an ordered list of functions (sqlite-utils / llm style).

A fresh database gets `create_all` and is stamped with SCHEMA_VERSION; an older one runs
MIGRATIONS[v - 1:] in order. Every function here takes an open connection and opens nothing: the
caller (haares.jobs.db.make_engine) runs `upgrade` inside a write transaction, which is the lock
(SQLite's write lock via BEGIN IMMEDIATE, plus a PostgreSQL advisory lock taken here), so concurrent
first starts cannot race; a newer schema is refused. This module imports nothing from db.py, so the
import graph has no cycle.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from haares.errors import HaaresError
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


def _v3_to_v4(conn: Connection) -> None:
    """Record each worker's heartbeat interval and lease TTL, for `status` to colour heartbeat ages by."""
    for column in ("heartbeat_s", "lease_ttl_s"):
        conn.execute(sa.text(f"ALTER TABLE workers ADD COLUMN {column} FLOAT"))


MIGRATIONS: list[Callable[[Connection], None]] = [_v1_to_v2, _v2_to_v3, _v3_to_v4]
"""MIGRATIONS[i] takes a database from version i + 1 to i + 2."""
assert len(MIGRATIONS) == SCHEMA_VERSION - 1, "append a migration when bumping SCHEMA_VERSION"


def schema_version(conn: Connection) -> int:
    """The database's schema version; 0 for an empty database."""
    if not sa.inspect(conn).has_table(Meta.__tablename__):
        return 0
    raw = conn.execute(sa.select(Meta.value).where(Meta.key == VERSION_KEY)).scalar_one_or_none()
    return int(raw) if raw is not None else 0


def refuse_newer(version: int) -> None:
    """HaaresError when the database's schema is newer than this code's."""
    if version > SCHEMA_VERSION:
        raise HaaresError(
            f"the database has schema version {version}, newer than this haares ({SCHEMA_VERSION}); "
            "upgrade haares on this host"
        )


NO_QUEUE_YET = "the database holds no haares queue yet; `haares enqueue --grid NAME` creates it"


def check_version(found: int) -> int | None:
    """For a read-only opening, given schema_version: None when current, the older version otherwise.

    HaaresError for an empty database (no haares tables) or a newer schema.
    """
    if found == 0:
        raise HaaresError(NO_QUEUE_YET)
    refuse_newer(found)
    return None if found == SCHEMA_VERSION else found


def upgrade(conn: Connection) -> int:
    """Create or upgrade the schema on `conn` (inside the caller's write transaction); the version before."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
    version = schema_version(conn)  # re-read under the lock: another process may have won
    refuse_newer(version)
    if version == 0:
        Base.metadata.create_all(conn)
    else:
        for step in MIGRATIONS[version - 1 :]:
            step(conn)
    if version != SCHEMA_VERSION:
        _stamp(conn, version)
    return version


def _stamp(conn: Connection, had: int) -> None:
    if had == 0:
        conn.execute(sa.insert(Meta).values(key=VERSION_KEY, value=str(SCHEMA_VERSION)))
    else:
        conn.execute(sa.update(Meta).where(Meta.key == VERSION_KEY).values(value=str(SCHEMA_VERSION)))
