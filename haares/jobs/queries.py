"""Read-only queries of one job's attempts (for `haares logs`); no writes, no locks.

The read models of `haares status` are in jobs/views.py; every write is in lease.py, admin.py and friends.
"""

from __future__ import annotations

from pathlib import Path

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
