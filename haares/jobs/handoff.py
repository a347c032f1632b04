"""Where a job's checkpoint is, across hosts: recorded by the worker that wrote it, read by claimers.

Each host may have its own results home. The worker that writes a checkpoint records (host, run
folder, step) on the job and its attempt; a worker elsewhere that cannot read it leaves the job to
that host for a grace period (the claim's `ckpt_grace_s`), then restarts it and records a note.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from haares.jobs.db import db_now, read_tx, run_write
from haares.jobs.lease import Lease, _fence
from haares.jobs.schema import Attempt, Event, Job


def record_checkpoint(*, engine: Engine, lease: Lease, host: str, ckpt_dir: str, step: int) -> bool:
    """Record a checkpoint written at `step` in `ckpt_dir` on `host` (fenced; False if the lease is lost)."""

    def body(conn: Connection) -> bool:
        done = conn.execute(sa.update(Job).where(_fence(lease))
                            .values(ckpt_host=host, ckpt_dir=ckpt_dir, ckpt_step=step).returning(Job.id)).first()
        if done is None:
            return False
        conn.execute(sa.update(Attempt).where(Attempt.job_id == lease.job_id, Attempt.lease_token == lease.token)
                     .values(ckpt_dir=ckpt_dir, ckpt_step=step))
        return True

    return run_write(engine, body)


def foreign_checkpoints(*, engine: Engine, host: str) -> list[tuple[int, str, int]]:
    """(job id, run key, checkpoint step) of queued jobs whose newest checkpoint another host recorded."""
    with read_tx(engine) as conn:
        rows = conn.execute(
            sa.select(Job.id, Job.run_key, Job.ckpt_step)
            .where(Job.status == "queued", Job.ckpt_host.is_not(None), Job.ckpt_host != host, Job.ckpt_step > 0)
        ).all()
    return [(int(r.id), str(r.run_key), int(r.ckpt_step)) for r in rows]


def record_restart(*, engine: Engine, lease: Lease, note: str, start_step: int) -> bool:
    """Store `note` on the job (shown by `status`) and a `restart` event, and set the attempt's start_step
    to `start_step`, the checkpoint this host does have (fenced)."""

    def body(conn: Connection) -> bool:
        now = db_now(conn)
        done = conn.execute(sa.update(Job).where(_fence(lease)).values(note=note).returning(Job.id)).first()
        if done is not None:
            conn.execute(sa.insert(Event).values(job_id=lease.job_id, at=now, kind="restart", detail=note))
            conn.execute(sa.update(Attempt).where(Attempt.job_id == lease.job_id, Attempt.lease_token == lease.token)
                         .values(start_step=start_step))
        return done is not None

    return run_write(engine, body)
