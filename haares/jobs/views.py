"""Read models of the queue for `status` and other readers: one row per job, and counts by grid and state.

Two queries whatever the number of jobs (jobs, then their grid links): no per-job polling.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from haares.jobs.db import db_now, read_tx
from haares.jobs.schema import Attempt, GridRun, Job, Worker

NO_GRID = "-"
"""The grid key of jobs linked to no grid."""


def job_rows(*, engine: Engine, grid: str | None = None) -> list[dict[str, Any]]:
    """Every job (of `grid`, if given), in schedule order, with the `status --json` fields.

    Fields: job_id, run_key, grids (list), cell, method, seed, state, step, total_steps,
    best_val_loss, last_val_loss, tokens_per_s, eta_s (seconds, running jobs with a measured rate),
    attempts (attempts run: every claim, whatever its end), retries_used (claims after a failure, which
    use the retry budget; preempted and lost attempts do not), max_retries, worker, gpu, heartbeat_age_s (seconds
    since the last heartbeat, running jobs only), heartbeat_s and lease_ttl_s (those of the worker holding
    the lease, as it registered them; None when not running or not recorded), plus kind, priority, lost_count, cancel_requested and
    error (the last error summary).
    Labels (cell, method, seed) are the given grid's, else those of the first grid that linked the job.
    """
    with read_tx(engine) as conn:
        now = db_now(conn)
        query = sa.select(Job)
        if grid is not None:
            query = query.where(Job.id.in_(sa.select(GridRun.job_id).where(GridRun.grid == grid)))
        jobs = conn.execute(query.order_by(Job.priority.desc(), Job.pair_index, Job.method_index, Job.id)).all()
        links_q = sa.select(GridRun).order_by(GridRun.grid)
        if grid is not None:
            links_q = links_q.where(GridRun.job_id.in_(sa.select(GridRun.job_id).where(GridRun.grid == grid)))
        runs_q = sa.select(Attempt.job_id, sa.func.count()).group_by(Attempt.job_id)
        if grid is not None:
            runs_q = runs_q.where(Attempt.job_id.in_(sa.select(GridRun.job_id).where(GridRun.grid == grid)))
        attempts_run = dict(conn.execute(runs_q).all())
        timing = {w.id: (w.heartbeat_s, w.lease_ttl_s) for w in conn.execute(
            sa.select(Worker.id, Worker.heartbeat_s, Worker.lease_ttl_s)
            .where(Worker.id.in_(sa.select(Job.lease_owner).where(Job.status == "running"))))}
        links: dict[int, list[Any]] = {}
        for link in conn.execute(links_q):
            links.setdefault(link.job_id, []).append(link)
    rows = []
    for job in jobs:
        mine = links.get(job.id, [])
        label = next((g for g in mine if g.grid == grid), mine[0] if mine else None)
        running = job.status == "running"
        eta = None
        if running and job.steps_per_s and job.total_steps:
            eta = max(0.0, (job.total_steps - job.step) / job.steps_per_s)
        age = (now - job.heartbeat_at).total_seconds() if running and job.heartbeat_at else None
        heartbeat_s, lease_ttl_s = timing.get(job.lease_owner, (None, None)) if running else (None, None)
        rows.append(
            {
                "job_id": job.id, "run_key": job.run_key, "grids": [g.grid for g in mine],
                "cell": label.cell if label else "", "method": label.method if label else job.method,
                "seed": label.seed if label else job.seed, "state": job.status, "step": job.step,
                "total_steps": job.total_steps, "best_val_loss": job.best_val_loss,
                "last_val_loss": job.last_val_loss, "tokens_per_s": job.tokens_per_s, "eta_s": eta,
                "attempts": int(attempts_run.get(job.id, 0)),
                # Job.attempts counts claims that used the budget; every one after the first is a retry.
                "retries_used": max(0, job.attempts - 1),
                "max_retries": max(0, job.max_attempts - 1), "worker": job.lease_owner if running else None,
                "gpu": job.gpu, "heartbeat_age_s": age, "heartbeat_s": heartbeat_s, "lease_ttl_s": lease_ttl_s, "kind": job.kind, "priority": job.priority,
                "lost_count": job.lost_count, "cancel_requested": bool(job.cancel_requested),
                "error": job.error_summary, "note": job.note,
            }
        )
    return rows


def state_counts(*, engine: Engine, grid: str | None = None) -> dict[str, dict[str, int]]:
    """{grid: {state: count}} in one aggregate query; jobs in no grid count under "-"."""
    # A literal (not a bound parameter), so PostgreSQL sees the same expression in SELECT and GROUP BY.
    grid_name = sa.func.coalesce(GridRun.grid, sa.literal_column(f"'{NO_GRID}'"))
    with read_tx(engine) as conn:
        query = (
            sa.select(grid_name, Job.status, sa.func.count())
            .select_from(Job)
            .outerjoin(GridRun, GridRun.job_id == Job.id)
            .group_by(grid_name, Job.status)
        )
        if grid is not None:
            query = query.where(GridRun.grid == grid)
        out: dict[str, dict[str, int]] = {}
        for name, state, count in conn.execute(query):
            out.setdefault(name, {})[state] = count
    return {name: dict(sorted(states.items())) for name, states in sorted(out.items())}


def grid_labels(*, engine: Engine, job_id: int) -> list[dict[str, Any]]:
    """Every grid's name for one job: [{grid, cell, method, seed}], by grid (names its TensorBoard curves)."""
    with read_tx(engine) as conn:
        links = conn.execute(
            sa.select(GridRun.grid, GridRun.cell, GridRun.method, GridRun.seed)
            .where(GridRun.job_id == job_id)
            .order_by(GridRun.grid)
        ).all()
    return [{"grid": g, "cell": c, "method": m, "seed": s} for g, c, m, s in links]
