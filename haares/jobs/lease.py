"""A worker's side of the queue: claim a job, heartbeat, record evals, finish (queue-design.md 3.4-3.6).

Every write after the claim is fenced on (job id, lease token, status running): a worker whose
lease was reaped and given away changes 0 rows and learns it from the False it gets back.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from haares.jobs.db import db_now, run_write
from haares.jobs.enqueue import upsert
from haares.jobs.schema import Attempt, Eval, Event, Job

HEARTBEAT_INTERVAL_S = 30.0
"""Default heartbeat interval (queue-design.md 3.5)."""
LEASE_TTL_S = 180.0
"""Default lease TTL: six missed heartbeats."""
OUTCOMES = ("succeeded", "failed", "preempted", "cancelled")
RETRY_BACKOFF_S = 60.0
"""First retry waits this long (x2 per further attempt, x1-1.5 jitter) after a retryable failure."""
ERROR_MAX_CHARS = 4000


@dataclass(frozen=True)
class Lease:
    """A claimed job: what to run, and the token that fences every later write."""

    job_id: int
    run_key: str
    kind: str
    token: str
    attempt_no: int
    """1 for the first claim; counts every claim (preempted and lost ones too)."""
    config_json: str
    method: str
    seed: int
    step: int
    """Last step the job reported (0 when it never ran); heartbeats overwrite it, so it is progress,
    not where a resume lands: that is ckpt_step."""
    fresh: bool = False
    """True after `haares retry --fresh`: do not resume from a checkpoint."""
    ckpt_host: str | None = None
    """Host whose results home holds the newest checkpoint (None: no checkpoint recorded)."""
    ckpt_dir: str | None = None
    ckpt_step: int | None = None
    """Step of the newest checkpoint recorded on the job (None: none recorded)."""
    start_step: int = 0
    """The attempt's start_step as claimed: ckpt_step, or 0 when fresh or none is recorded."""


@dataclass(frozen=True)
class Beat:
    """A heartbeat's answer: is the lease still ours, and has someone asked to cancel the job."""

    alive: bool
    cancel_requested: bool


def _fence(lease: Lease) -> sa.ColumnElement[bool]:
    return sa.and_(Job.id == lease.job_id, Job.lease_token == lease.token, Job.status == "running")


# Long because: one claim statement and the attempt insert of its transaction, read together; half is docstring.
def claim(
    *,
    engine: Engine,
    worker_id: str,
    host: str,
    pid: int,
    pid_start: float | None,
    gpu: str | None,
    lease_ttl_s: float,
    kinds: tuple[str, ...] | None = None,
    job_ids: Collection[int] | None = None,
    ckpt_grace_s: float | None = None,
    readable: tuple[int, ...] = (),
) -> Lease | None:
    """Claim the next queued job (priority desc, pair, method, id) in one statement, or None.

    `kinds` (when given) restricts the claim to jobs of those kinds (a worker passes the kinds it can
    run, haares.kinds); None claims any kind. `job_ids` (when given) restricts the claim to those jobs: a worker with a time limit passes the
    ones that can finish in time (haares.timelimit); an empty collection claims nothing.

    SQLite: `UPDATE .. WHERE id = (SELECT .. LIMIT 1) RETURNING` inside BEGIN IMMEDIATE; PostgreSQL:
    the same with `FOR UPDATE SKIP LOCKED` in the subquery. The attempt row is inserted in the same
    transaction. The lease expires `lease_ttl_s` seconds after the database's now.
    With `ckpt_grace_s`, a job whose checkpoint another host holds is claimed only if its id is in
    `readable` (this host can read that checkpoint) or it has waited `ckpt_grace_s` since it became
    claimable (docs/worker.md, "Several hosts").
    """
    token = secrets.token_hex(16)
    if job_ids is not None and not job_ids:
        return None

    def body(conn: Connection) -> Lease | None:
        now = db_now(conn)
        pick = (
            sa.select(Job.id)
            .where(Job.status == "queued", Job.not_before <= now)
            .where(_checkpoint_rule(host, now, ckpt_grace_s, readable))
            .order_by(Job.priority.desc(), Job.pair_index, Job.method_index, Job.id)
            .limit(1)
        )
        if kinds is not None:
            pick = pick.where(Job.kind.in_(kinds))
        if job_ids is not None:
            pick = pick.where(Job.id.in_(list(job_ids)))
        if conn.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        row = conn.execute(
            sa.update(Job)
            .where(Job.id == pick.scalar_subquery(), Job.status == "queued")
            .values(
                status="running", lease_token=token, lease_owner=worker_id, lease_host=host, lease_pid=pid,
                lease_pid_start=pid_start, lease_expires_at=now + timedelta(seconds=lease_ttl_s),
                heartbeat_at=now, gpu=gpu, attempts=Job.attempts + 1, cancel_requested=False, updated_at=now,
            )
            .returning(Job.id, Job.run_key, Job.kind, Job.config_json, Job.method, Job.seed, Job.step,
                       Job.fresh_start, Job.ckpt_host, Job.ckpt_dir, Job.ckpt_step)
        ).one_or_none()
        if row is None:
            return None
        start_step = 0 if row.fresh_start else (row.ckpt_step or 0)
        attempt_no = conn.execute(
            sa.select(sa.func.count()).select_from(Attempt).where(Attempt.job_id == row.id)
        ).scalar_one() + 1
        conn.execute(
            sa.insert(Attempt).values(
                job_id=row.id, attempt_no=attempt_no, lease_token=token, worker=worker_id, host=host, pid=pid,
                gpu=gpu, started_at=now, start_step=start_step,
            )
        )
        conn.execute(sa.insert(Event).values(job_id=row.id, at=now, kind="claimed",
                                             detail=f"attempt {attempt_no} by {worker_id} on {host}"))
        return Lease(row.id, row.run_key, row.kind, token, attempt_no, row.config_json, row.method, row.seed,
                     row.step, bool(row.fresh_start), row.ckpt_host, row.ckpt_dir, row.ckpt_step, start_step)

    return run_write(engine, body)


def _checkpoint_rule(host: str, now: Any, grace_s: float | None, readable: tuple[int, ...]) -> Any:
    """Claimable here: no checkpoint elsewhere, a readable one, or a grace period over; True without grace."""
    if grace_s is None:
        return sa.true()
    return sa.or_(
        Job.ckpt_host.is_(None), Job.ckpt_step.is_(None), Job.ckpt_step == 0, Job.ckpt_host == host,
        Job.fresh_start, Job.id.in_(list(readable)), Job.not_before <= now - timedelta(seconds=grace_s),
    )


def heartbeat(*, engine: Engine, lease: Lease, lease_ttl_s: float, progress: dict[str, Any] | None = None) -> Beat:
    """Extend the lease to now + `lease_ttl_s` and store progress (step, train_loss, tokens_per_s, steps_per_s).

    Returns Beat(alive=False, ...) when the lease is lost (reaped, finished or cancelled elsewhere).
    """

    def body(conn: Connection) -> Beat:
        now = db_now(conn)
        values: dict[str, Any] = dict(
            lease_expires_at=now + timedelta(seconds=lease_ttl_s), heartbeat_at=now, updated_at=now
        )
        if progress:
            values["progress_json"] = json.dumps(progress, sort_keys=True, default=str)
            for key in ("step", "tokens_per_s", "steps_per_s"):
                if progress.get(key) is not None:
                    values[key] = progress[key]
        row = conn.execute(sa.update(Job).where(_fence(lease)).values(**values).returning(Job.cancel_requested))
        flag = row.scalar_one_or_none()
        return Beat(alive=flag is not None, cancel_requested=bool(flag))

    return run_write(engine, body)


EVAL_FIELDS = ("step", "tokens", "train_seconds", "val_loss", "val_bpb", "train_loss", "steps_per_s",
               "tokens_per_s", "peak_mem_bytes", "device")


def record_eval(*, engine: Engine, lease: Lease, point: dict[str, Any]) -> bool:
    """Store one eval point (fenced) and update the job's step, best/last val loss and throughput.

    Idempotent per (job, step): a resumed attempt re-reporting a step replaces the earlier row.
    """
    row = {k: point.get(k) for k in EVAL_FIELDS}

    def body(conn: Connection) -> bool:
        now = db_now(conn)
        values: dict[str, Any] = dict(step=row["step"], updated_at=now, fresh_start=False)
        for key in ("tokens_per_s", "steps_per_s"):
            if row[key] is not None:
                values[key] = row[key]
        if conn.execute(sa.update(Job).where(_fence(lease)).values(**values).returning(Job.id)).first() is None:
            return False
        update = {k: v for k, v in row.items() if k != "step"} | {"attempt_no": lease.attempt_no}
        conn.execute(
            upsert(conn, Eval, dict(job_id=lease.job_id, **update, step=row["step"]))
            .on_conflict_do_update(index_elements=["job_id", "step"], set_=update)
        )
        mine = Eval.job_id == lease.job_id
        last_step = sa.select(sa.func.max(Eval.step)).where(mine).scalar_subquery()
        conn.execute(
            sa.update(Job).where(Job.id == lease.job_id).values(
                best_val_loss=sa.select(sa.func.min(Eval.val_loss)).where(mine).scalar_subquery(),
                last_val_loss=sa.select(Eval.val_loss).where(mine, Eval.step == last_step).scalar_subquery(),
            )
        )
        return True

    return run_write(engine, body)


def _update_attempt(engine: Engine, lease: Lease, **values: Any) -> bool:
    """Set columns of the lease's current attempt, fenced: False (nothing written) once the lease is lost."""

    def body(conn: Connection) -> bool:
        if conn.execute(sa.select(Job.id).where(_fence(lease))).first() is None:
            return False
        conn.execute(
            sa.update(Attempt)
            .where(Attempt.job_id == lease.job_id, Attempt.lease_token == lease.token)
            .values(**values)
        )
        return True

    return run_write(engine, body)


def set_attempt_device(*, engine: Engine, lease: Lease, device_name: str) -> bool:
    """Record the device the child reported on the current attempt (fenced)."""
    return _update_attempt(engine, lease, device_name=device_name)


def record_start(*, engine: Engine, lease: Lease, step: int) -> bool:
    """Set the attempt's start_step to the step its child really resumed from (fenced).

    The claim's start_step is the job's recorded checkpoint step, which lags the checkpoint files when a
    worker dies between the child writing a checkpoint and the worker recording it (or the newest file
    is unreadable and the child falls back to an older one): the child's own `start` event is the truth.
    """
    return _update_attempt(engine, lease, start_step=step)


def set_attempt_log(*, engine: Engine, lease: Lease, log_path: str) -> bool:
    """Record where the current attempt's child writes its log (fenced)."""
    return _update_attempt(engine, lease, log_path=log_path)


def finish(
    *,
    engine: Engine,
    lease: Lease,
    outcome: str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    terminal: bool = False,
    exit_code: int | None = None,
    end_step: int | None = None,
) -> bool:
    """End the attempt with `outcome` and apply the retry policy (fenced; False if the lease was lost).

    succeeded -> succeeded; cancelled -> cancelled; preempted -> queued, the attempt not counted;
    failed -> failed if `terminal` or the job's attempts reached max_attempts, else queued after a backoff.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    err = error[-ERROR_MAX_CHARS:] if error else None

    def body(conn: Connection) -> bool:
        now = db_now(conn)
        pick = sa.select(Job.attempts, Job.max_attempts).where(_fence(lease))
        if conn.dialect.name == "postgresql":
            pick = pick.with_for_update()
        job = conn.execute(pick).one_or_none()
        if job is None:
            return False
        values: dict[str, Any] = dict(
            lease_token=None, lease_owner=None, lease_host=None, lease_pid=None, lease_pid_start=None,
            lease_expires_at=None, cancel_requested=False, updated_at=now,
        )
        if end_step is not None:
            values["step"] = end_step
        event = outcome
        if outcome == "succeeded":
            values.update(status="succeeded", finished_at=now, error_summary=None,
                          result_json=json.dumps(result, sort_keys=True, default=str) if result is not None else None)
        elif outcome == "cancelled":
            values.update(status="cancelled", finished_at=now)
        elif outcome == "preempted":
            values.update(status="queued", attempts=Job.attempts - 1, not_before=now)
        elif terminal or job.attempts >= job.max_attempts:
            values.update(status="failed", finished_at=now, error_summary=err)
            event = "failed" if terminal else "failed_exhausted"
        else:
            delay = RETRY_BACKOFF_S * 2 ** max(0, job.attempts - 1) * random.uniform(1.0, 1.5)
            values.update(status="queued", not_before=now + timedelta(seconds=delay), error_summary=err)
            event = "retry"
        conn.execute(sa.update(Job).where(_fence(lease)).values(**values))
        conn.execute(
            sa.update(Attempt)
            .where(Attempt.job_id == lease.job_id, Attempt.lease_token == lease.token, Attempt.ended_at.is_(None))
            .values(ended_at=now, outcome=outcome, exit_code=exit_code, error=err, end_step=end_step)
        )
        detail = f"attempt {lease.attempt_no}" + (f", exit {exit_code}" if exit_code is not None else "")
        conn.execute(sa.insert(Event).values(job_id=lease.job_id, at=now, kind=event, detail=detail))
        return True

    return run_write(engine, body)
