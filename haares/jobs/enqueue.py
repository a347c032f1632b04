"""Putting runs on the queue: idempotent per run key, one transaction per grid, grids linked many-to-many."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from haares.grids import RunSpec
from haares.jobs.db import db_now, run_write
from haares.jobs.schema import Event, GridRun, Job


@dataclass(frozen=True)
class EnqueueResult:
    """What an enqueue did: `new` jobs inserted, `existing` ones found (and linked to the grid)."""

    new: int
    existing: int
    other_code_ref: int = 0
    """Existing runs whose stored code_ref differs from this enqueue's (reported, never duplicated)."""
    job_ids: tuple[int, ...] = ()
    """Job ids of every run passed in, in input order."""


def upsert(conn: Connection, table: type, rows: dict) -> sa.Insert:
    """The dialect's INSERT for `table` (the caller adds ON CONFLICT)."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return insert(table).values(**rows)


def enqueue_runs(
    *, engine: Engine, grid: str, runs: list[RunSpec], priority: int = 0, code_ref: str = ""
) -> EnqueueResult:
    """Insert `runs` of `grid` (INSERT .. ON CONFLICT (run_key) DO NOTHING) and link each to the grid.

    One transaction: a concurrent or repeated enqueue of the same grid adds nothing; a run that is
    already in the database (from this or another grid) is linked, not duplicated.
    """

    def body(conn: Connection) -> EnqueueResult:
        now = db_now(conn)
        new = 0
        other = 0
        ids: list[int] = []
        for spec in runs:
            cfg = spec.config
            stmt = (
                upsert(
                    conn,
                    Job,
                    dict(
                        run_key=cfg.run_key(), kind="train", method=spec.method, seed=spec.seed,
                        pair_index=spec.pair_index, method_index=spec.method_index, config_json=cfg.to_json(),
                        code_ref=code_ref, priority=priority, status="queued", total_steps=cfg.train.steps,
                        not_before=now, created_at=now, updated_at=now,
                    ),
                )
                .on_conflict_do_nothing(index_elements=["run_key"])
                .returning(Job.id)
            )
            job_id = conn.execute(stmt).scalar_one_or_none()
            if job_id is None:
                job_id, stored_ref = conn.execute(
                    sa.select(Job.id, Job.code_ref).where(Job.run_key == cfg.run_key())
                ).one()
                other += int(stored_ref != code_ref)
            else:
                new += 1
            ids.append(job_id)
            conn.execute(
                upsert(
                    conn,
                    GridRun,
                    dict(grid=grid, job_id=job_id, cell=spec.cell, method=spec.method, seed=spec.seed,
                         pair_index=spec.pair_index, method_index=spec.method_index),
                ).on_conflict_do_nothing(index_elements=["grid", "job_id"])
            )
        conn.execute(
            sa.insert(Event).values(
                job_id=None, at=now, kind="enqueue", detail=f"grid {grid}: {new} new, {len(runs) - new} existing"
            )
        )
        return EnqueueResult(new, len(runs) - new, other, tuple(ids))

    return run_write(engine, body)


def enqueue_configs(
    *, engine: Engine, kind: str, grid: str, configs: list[dict], priority: int = 0
) -> EnqueueResult:
    """One new job of `kind` per config (not a training run: no run key dedup), linked to grid `grid`.

    For kinds other than `train` (haares.kinds; the tests' `sleep`): each job gets a random run key, so
    enqueueing the same configs twice queues them twice.
    """

    def body(conn: Connection) -> EnqueueResult:
        now = db_now(conn)
        rows = [
            dict(run_key=f"{kind}-{secrets.token_hex(10)}", kind=kind, method=kind, seed=0, pair_index=i,
                 method_index=0, config_json=json.dumps(config, sort_keys=True), priority=priority,
                 status="queued", total_steps=0, not_before=now, created_at=now, updated_at=now)
            for i, config in enumerate(configs)
        ]
        ids = [conn.execute(sa.insert(Job).values(**row).returning(Job.id)).scalar_one() for row in rows]
        if ids:
            conn.execute(
                sa.insert(GridRun),
                [dict(grid=grid, job_id=j, cell="", method=kind, seed=0, pair_index=i, method_index=0)
                 for i, j in enumerate(ids)],
            )
        conn.execute(sa.insert(Event).values(job_id=None, at=now, kind="enqueue",
                                             detail=f"{len(ids)} {kind} jobs ({grid})"))
        return EnqueueResult(len(ids), 0, 0, tuple(ids))

    return run_write(engine, body)
