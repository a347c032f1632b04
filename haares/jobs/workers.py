"""The `workers` table: a worker registers itself at start and touches its row while it runs.

Informational only (shown by `haares status`): no lease depends on it, so these writes are not fenced.
Each worker records its own heartbeat interval and lease TTL (schema v4), so a reader colours a job's
heartbeat age against the numbers of the worker that holds it, not against the defaults.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from haares.jobs.db import db_now, run_write
from haares.jobs.schema import Worker


def register_worker(
    *, engine: Engine, worker_id: str, host: str, pid: int, gpu: str | None, version: str,
    heartbeat_s: float, lease_ttl_s: float,
) -> None:
    """Insert this worker's row (last_seen = started_at = the database's now)."""

    def body(conn: Connection) -> None:
        now = db_now(conn)
        conn.execute(sa.insert(Worker).values(
            id=worker_id, host=host, pid=pid, gpu=gpu, version=version, started_at=now, last_seen=now,
            draining=False, heartbeat_s=heartbeat_s, lease_ttl_s=lease_ttl_s))

    run_write(engine, body)


def touch_worker(*, engine: Engine, worker_id: str, draining: bool = False) -> bool:
    """Set last_seen to now and the draining flag; False when the row is gone."""

    def body(conn: Connection) -> bool:
        done = conn.execute(sa.update(Worker).where(Worker.id == worker_id)
                            .values(last_seen=db_now(conn), draining=draining).returning(Worker.id)).first()
        return done is not None

    return run_write(engine, body)
