"""Read-only queries: one job's attempts (for `haares logs`), and what a worker's time limit weighs
(queued jobs in claim order, finished attempts' timings; haares.timelimit); no writes, no locks.

The read models of `haares status` are in jobs/views.py; every write is in lease.py, admin.py and friends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from haares.errors import HaaresError
from haares.jobs.db import read_tx
from haares.jobs.schema import Attempt, Job


def attempt_log(*, engine: Engine, job_id: int, attempt: int | None = None) -> tuple[int, Path]:
    """(attempt_no, log path) of the given attempt of a job, or of its latest one.

    HaaresError when the job or attempt does not exist or no log was recorded yet.
    """
    with read_tx(engine) as conn:
        if conn.execute(sa.select(Job.id).where(Job.id == job_id)).first() is None:
            raise HaaresError(f"no job {job_id}; `haares status` lists job ids")
        query = sa.select(Attempt.attempt_no, Attempt.log_path).where(Attempt.job_id == job_id)
        runs = conn.execute(sa.select(sa.func.max(Attempt.attempt_no)).where(Attempt.job_id == job_id)).scalar()
        if attempt is not None:
            query = query.where(Attempt.attempt_no == attempt)
        row = conn.execute(query.order_by(Attempt.attempt_no.desc()).limit(1)).first()
    if row is None and not runs:
        raise HaaresError(f"job {job_id} has no attempt yet; it has not been claimed by a worker")
    if row is None:
        raise HaaresError(f"job {job_id} has no attempt {attempt}: it ran {runs} attempt(s), numbered 1 to {runs}")
    if not row.log_path:
        raise HaaresError(f"job {job_id} attempt {row.attempt_no} has no log recorded")
    return int(row.attempt_no), Path(row.log_path)


def attempt_ended(*, engine: Engine, job_id: int, attempt_no: int) -> bool:
    """True once the attempt has an end time or a later attempt exists (it was reaped as lost)."""
    with read_tx(engine) as conn:
        rows = conn.execute(
            sa.select(Attempt.attempt_no, Attempt.ended_at).where(Attempt.job_id == job_id,
                                                                 Attempt.attempt_no >= attempt_no)
        ).all()
    return any(r.ended_at is not None or r.attempt_no > attempt_no for r in rows)


def time_limit_inputs(*, engine: Engine, kinds: tuple[str, ...], limit: int,
                      worker: str | None = None) -> tuple[list[Any], list[Any]]:
    """(queued jobs, attempt timings), read in one transaction, for haares.timelimit.claimable_ids.

    Queued jobs of `kinds`, at most `limit`, in claim order: rows of (id, kind, run_key, config_json,
    total_steps). Timings, only when a queued job is a `train` one (else []): the succeeded or preempted
    train attempts that advanced, newest end first (of `worker` only, when given), as rows of
    (config_json, started_at, ended_at, start_step, end_step).
    """
    with read_tx(engine) as conn:
        queued = conn.execute(
            sa.select(Job.id, Job.kind, Job.run_key, Job.config_json, Job.total_steps)
            .where(Job.status == "queued", Job.kind.in_(kinds))
            .order_by(Job.priority.desc(), Job.pair_index, Job.method_index, Job.id)
            .limit(limit)
        ).all()
        if not any(j.kind == "train" for j in queued):
            return queued, []
        timings = (
            sa.select(Job.config_json, Attempt.started_at, Attempt.ended_at, Attempt.start_step, Attempt.end_step)
            .join(Job, Job.id == Attempt.job_id)
            .where(Job.kind == "train", Attempt.outcome.in_(("succeeded", "preempted")),
                   Attempt.ended_at.is_not(None), Attempt.end_step > sa.func.coalesce(Attempt.start_step, 0))
            .order_by(Attempt.ended_at.desc())
        )
        if worker is not None:
            timings = timings.where(Attempt.worker == worker)
        return queued, conn.execute(timings).all()
