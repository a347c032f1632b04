"""Races at the API level, in separate processes (multiprocessing spawn, no torch imported): N claimers
drain a few hundred sleep jobs with every job claimed exactly once and no BUSY error on either backend;
a naive read-then-write claim DOES show duplicates (the canary that proves the harness sees races);
concurrent enqueues of main48 give exactly 9 jobs; concurrent first opens migrate once."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
import sys
import time
from collections import Counter

import pytest
import sqlalchemy as sa

PROCS = 4
JOBS = 200


def _drain(url: str, name: str, barrier, results) -> None:
    """Child: claim -> finish(succeeded) until the queue is empty; report claimed ids and errors."""
    from haares.jobs import claim, finish, make_engine

    claimed: list[int] = []
    errors: list[str] = []
    engine = make_engine(url)
    barrier.wait()
    while True:
        try:
            lease = claim(engine=engine, worker_id=name, host="h", pid=os.getpid(), pid_start=None, gpu=None,
                          lease_ttl_s=60)
            if lease is None:
                break
            claimed.append(lease.job_id)
            # The work a job does between its claim and its finish: without it one process can drain
            # the whole queue before the others are scheduled on a loaded 2-core machine.
            time.sleep(0.002)
            if not finish(engine=engine, lease=lease, outcome="succeeded"):
                errors.append(f"fenced out of job {lease.job_id}")
        except Exception as exc:  # noqa: BLE001 - every error is a finding, reported to the parent
            errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
            if len(errors) > 20:
                break
    engine.dispose()
    results.put((name, claimed, errors, "torch" in sys.modules))


def _naive_drain(path: str, name: str, barrier, results) -> None:
    """Child: the racy protocol, SELECT the first queued id then UPDATE it with no status guard."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    claimed: list[int] = []
    barrier.wait()
    while True:
        row = conn.execute("SELECT id FROM jobs WHERE status='queued' ORDER BY id LIMIT 1").fetchone()
        if row is None:
            break
        time.sleep(0.002)  # the work a real worker does between reading and writing (logging, checks)
        conn.execute("UPDATE jobs SET status='running', lease_owner=? WHERE id=?", (name, row[0]))
        claimed.append(row[0])
    conn.close()
    results.put((name, claimed, [], "torch" in sys.modules))


def _enqueue(url: str, name: str, barrier, results) -> None:
    from haares.grids import expand, get_grid
    from haares.jobs import enqueue_runs, make_engine

    engine = make_engine(url)  # also races the first-open migration
    barrier.wait()
    res = enqueue_runs(engine=engine, grid="main48", runs=expand(get_grid("main48")), code_ref="x")
    engine.dispose()
    results.put((name, [res.new, res.existing], [], "torch" in sys.modules))


def run_children(target, arg, n: int) -> list[tuple]:
    """Start n spawned children on `target(arg, name, barrier, results)` and collect their reports."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(arg, f"p{i}", barrier, results)) for i in range(n)]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return out


def duplicates(reports: list[tuple]) -> dict[int, int]:
    """Job ids claimed more than once, with their claim counts."""
    seen = Counter(j for _, claimed, _, _ in reports for j in claimed)
    return {j: c for j, c in seen.items() if c > 1}


@pytest.mark.slow
def test_parallel_claims_claim_each_job_once(db_url):
    from fixtures.sleep_kind import enqueue_sleep

    from haares.jobs import make_engine, state_counts
    from haares.jobs.schema import Attempt

    engine = make_engine(db_url)
    ids = set(enqueue_sleep(engine=engine, count=JOBS, seconds=0).job_ids)
    reports = run_children(_drain, db_url, PROCS)
    assert [e for _, _, errs, _ in reports for e in errs] == []  # no BUSY, no fencing loss
    assert not any(torch for *_, torch in reports)
    assert duplicates(reports) == {}
    assert {j for _, claimed, _, _ in reports for j in claimed} == ids
    assert state_counts(engine=engine) == {"sleep": {"succeeded": JOBS}}
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Attempt)).scalar_one() == JOBS
    # more than one process did work, so the claims really were concurrent
    assert sum(1 for _, claimed, _, _ in reports if claimed) > 1
    engine.dispose()


@pytest.mark.slow
def test_canary_naive_claim_shows_duplicates(sqlite_url):
    from fixtures.sleep_kind import enqueue_sleep

    from haares.jobs import make_engine

    engine = make_engine(sqlite_url)
    enqueue_sleep(engine=engine, count=JOBS, seconds=0)
    engine.dispose()
    reports = run_children(_naive_drain, sqlite_url.removeprefix("sqlite:///"), PROCS)
    assert len(duplicates(reports)) > 0, "the harness must see the races of a naive claim"


@pytest.mark.slow
def test_concurrent_enqueue_gives_exactly_nine(db_url):
    from haares.jobs import make_engine
    from haares.jobs.schema import GridRun, Job

    reports = run_children(_enqueue, db_url, 2)
    assert sorted(tuple(r[1]) for r in reports) == [(0, 9), (9, 0)]
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Job)).scalar_one() == 9
        assert conn.execute(sa.select(sa.func.count()).select_from(GridRun)).scalar_one() == 9
    engine.dispose()
