"""Reaping: give back jobs whose lease expired or whose same-host worker process is gone.

Any process may call `reap` at any time (workers every reaper period, `status` and `enqueue` on
start): every update is guarded by the lease token it saw, so concurrent reapers reclaim a job once.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from haares.jobs.db import db_now, read_tx, run_write
from haares.jobs.procs import pid_alive
from haares.jobs.schema import Attempt, Event, Job


def reap(*, engine: Engine, host: str | None = None) -> int:
    """Reclaim lost leases; returns how many jobs were reclaimed.

    A running job is lost when its lease expired (database clock), or, when `host` is given, when
    its lease is held on that host by a pid that is dead or alive with another start time (pid
    reuse). Lost jobs go back to queued at once (lost_count + 1, attempts not consumed), to failed
    (poison) when lost_count reaches max_lost, or to cancelled when a cancel had been requested.
    """
    with read_tx(engine) as conn:
        now = db_now(conn)
        running = conn.execute(
            sa.select(Job.id, Job.lease_token, Job.lease_host, Job.lease_pid, Job.lease_pid_start,
                      Job.lease_expires_at).where(Job.status == "running")
        ).all()
    expired = [(r.id, r.lease_token) for r in running if r.lease_expires_at is not None and r.lease_expires_at < now]
    dead = [
        (r.id, r.lease_token)
        for r in running
        if host is not None and r.lease_host == host and (r.id, r.lease_token) not in expired
        and r.lease_pid is not None and not pid_alive(r.lease_pid, r.lease_pid_start)
    ]
    if not expired and not dead:
        return 0

    def body(conn: Connection) -> int:
        now = db_now(conn)
        count = 0
        for job_id, token in expired:
            count += _lose(conn, job_id=job_id, token=token, now=now, expired_before=now, reason="lease expired")
        for job_id, token in dead:
            count += _lose(conn, job_id=job_id, token=token, now=now, expired_before=None, reason="worker pid gone")
        return count

    return run_write(engine, body)


def _lose(
    conn: Connection, *, job_id: int, token: str, now: datetime, expired_before: datetime | None, reason: str
) -> int:
    guard = [Job.id == job_id, Job.lease_token == token, Job.status == "running"]
    if expired_before is not None:  # re-checked under the write lock: a heartbeat may have just landed
        guard.append(Job.lease_expires_at < expired_before)
    poisoned = Job.lost_count + 1 >= Job.max_lost
    row = conn.execute(
        sa.update(Job).where(*guard).values(
            status=sa.case((Job.cancel_requested, "cancelled"), (poisoned, "failed"), else_="queued"),
            error_summary=sa.case(
                (sa.and_(poisoned, sa.not_(Job.cancel_requested)),
                 sa.literal("poison: lease lost ") + sa.cast(Job.lost_count + 1, sa.String) + " times"),
                else_=Job.error_summary,
            ),
            finished_at=sa.case((sa.or_(Job.cancel_requested, poisoned), now), else_=Job.finished_at),
            lost_count=Job.lost_count + 1, attempts=Job.attempts - 1, not_before=now, cancel_requested=False,
            lease_token=None, lease_owner=None, lease_host=None, lease_pid=None, lease_pid_start=None,
            lease_expires_at=None, updated_at=now,
        ).returning(Job.status)
    ).scalar_one_or_none()
    if row is None:
        return 0
    conn.execute(
        sa.update(Attempt)
        .where(Attempt.job_id == job_id, Attempt.lease_token == token, Attempt.ended_at.is_(None))
        .values(ended_at=now, outcome="lost", error=reason)
    )
    kind = {"queued": "lost", "failed": "poison", "cancelled": "cancelled"}[row]
    conn.execute(sa.insert(Event).values(job_id=job_id, at=now, kind=kind, detail=reason))
    return 1
