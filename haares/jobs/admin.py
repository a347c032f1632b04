"""Operator state changes: cancel, hold, release, retry, by job ids or by grid (queue-design.md 3.3).

Each is one transaction; an unknown job id or an empty selection raises HaaresError and changes nothing.
`succeeded` jobs are never touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from haares.errors import HaaresError
from haares.jobs.db import db_now, read_tx, run_write
from haares.jobs.schema import Eval, Event, GridRun, Job


def _selected(conn: Connection, job_ids: list[int] | None, grid: str | None) -> list[int]:
    if not job_ids and not grid:
        raise HaaresError("name the jobs: give job ids (see `haares status`) or --grid NAME")
    ids: set[int] = set()
    if job_ids:
        wanted = {int(j) for j in job_ids}
        found = set(conn.execute(sa.select(Job.id).where(Job.id.in_(wanted))).scalars())
        missing = sorted(wanted - found)
        if missing:
            raise HaaresError(f"no job with id {', '.join(map(str, missing))}; `haares status` lists job ids")
        ids |= found
    if grid:
        in_grid = set(conn.execute(sa.select(GridRun.job_id).where(GridRun.grid == grid)).scalars())
        if not in_grid:
            raise HaaresError(f"no jobs in grid {grid!r}; enqueue it first (`haares enqueue --grid {grid}`)")
        ids |= in_grid
    return sorted(ids)


def _transition(
    conn: Connection, ids: Iterable[int], *, from_states: tuple[str, ...], values: dict[str, Any], event: str,
    now: datetime,
) -> list[int]:
    changed = list(
        conn.execute(
            sa.update(Job).where(Job.id.in_(list(ids)), Job.status.in_(from_states))
            .values(**values, updated_at=now).returning(Job.id)
        ).scalars()
    )
    if changed:
        conn.execute(sa.insert(Event), [dict(job_id=j, at=now, kind=event, detail=None) for j in changed])
    return changed


def cancel(*, engine: Engine, job_ids: list[int] | None = None, grid: str | None = None, fresh: bool = False) -> int:
    """Cancel queued/held jobs at once; ask running ones to stop (cancel_requested: the worker stops the child).

    Returns how many jobs changed. `fresh` is ignored (one signature for every admin operation).
    """

    def body(conn: Connection) -> int:
        now = db_now(conn)
        ids = _selected(conn, job_ids, grid)
        done = _transition(conn, ids, from_states=("queued", "held"), event="cancel", now=now,
                           values=dict(status="cancelled", finished_at=now))
        asked = list(conn.execute(
            sa.update(Job).where(Job.id.in_(ids), Job.status == "running", sa.not_(Job.cancel_requested))
            .values(cancel_requested=True, updated_at=now).returning(Job.id)
        ).scalars())
        if asked:
            conn.execute(sa.insert(Event), [dict(job_id=j, at=now, kind="cancel_requested", detail=None) for j in asked])
        return len(done) + len(asked)

    return run_write(engine, body)


def hold(*, engine: Engine, job_ids: list[int] | None = None, grid: str | None = None, fresh: bool = False) -> int:
    """Queued -> held (no worker claims it until `release`); returns how many changed."""

    def body(conn: Connection) -> int:
        now = db_now(conn)
        ids = _selected(conn, job_ids, grid)
        return len(_transition(conn, ids, from_states=("queued",), values=dict(status="held"), event="hold", now=now))

    return run_write(engine, body)


def release(*, engine: Engine, job_ids: list[int] | None = None, grid: str | None = None, fresh: bool = False) -> int:
    """Held -> queued; returns how many changed."""

    def body(conn: Connection) -> int:
        now = db_now(conn)
        ids = _selected(conn, job_ids, grid)
        return len(_transition(conn, ids, from_states=("held",), values=dict(status="queued", not_before=now),
                               event="release", now=now))

    return run_write(engine, body)


def retry(*, engine: Engine, job_ids: list[int] | None = None, grid: str | None = None, fresh: bool = False) -> int:
    """Failed/cancelled -> queued with a full retry budget; resumes from its checkpoint unless `fresh`.

    `fresh` also forgets the job's evals and progress, and marks it so the next attempt starts at step 0.
    Returns how many changed.
    """

    def body(conn: Connection) -> int:
        now = db_now(conn)
        ids = _selected(conn, job_ids, grid)
        values: dict[str, Any] = dict(status="queued", attempts=0, lost_count=0, not_before=now, cancel_requested=False,
                                      finished_at=None, error_summary=None)
        if fresh:
            values.update(step=0, best_val_loss=None, last_val_loss=None, tokens_per_s=None, steps_per_s=None,
                          progress_json=None, result_json=None, fresh_start=True)
        changed = _transition(conn, ids, from_states=("failed", "cancelled"), values=values,
                              event="retry_fresh" if fresh else "retry_manual", now=now)
        if fresh and changed:
            conn.execute(sa.delete(Eval).where(Eval.job_id.in_(changed)))
        return len(changed)

    return run_write(engine, body)


FROM_STATES = {"cancel": ("queued", "held", "running"), "hold": ("queued",), "release": ("held",),
               "retry": ("failed", "cancelled")}
"""The states each operation changes (cancel of a running job asks its worker to stop it)."""


def why_unchanged(*, engine: Engine, op: str, job_ids: list[int] | None = None, grid: str | None = None) -> str:
    """One line saying why `op` changed none of the selected jobs: their states, and what `op` takes."""
    with read_tx(engine) as conn:
        ids = _selected(conn, job_ids, grid)
        rows = conn.execute(sa.select(Job.id, Job.status, Job.cancel_requested).where(Job.id.in_(ids))).all()
    if len(rows) <= 3:
        states = ", ".join(f"job {r.id} is {r.status}" + (" (cancelling)" if r.cancel_requested else "")
                           for r in sorted(rows))
    else:
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.status] = counts.get(r.status, 0) + 1
        states = "the jobs are " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return f"nothing to {op}: {states}; {op} takes {' or '.join(FROM_STATES[op])} jobs"
