"""Checks the smaller `status`, `retry` and `logs` answers of issue 12: the table fits 80 columns without
cutting a cell, an unknown grid is an error, `--json` shows attempts run apart from retries used, an
operation that changes nothing says why, and a missing attempt number is blamed on the number.
Also (issue 14): status only reads (an expired lease stays as it is until a worker or enqueue reaps it),
and colours a heartbeat's age against the interval and TTL of the worker holding the job.
"""

from __future__ import annotations

import io
import json

import sqlalchemy as sa
from fixtures.queue import dump
from fixtures.sleep_kind import enqueue_sleep
from rich.console import Console

from haares.cli.status import job_heartbeat_style, render, snapshot
from haares.jobs import claim, make_engine, reap, register_worker
from haares.jobs.schema import Job


def take(engine, worker: str = "hostname-of-a-cluster-node.example.org:123456:abcdef"):
    return claim(engine=engine, worker_id=worker, host="elsewhere", pid=1, pid_start=None, gpu="0", lease_ttl_s=60)


def lose(engine, job_id: int) -> None:
    """Expire the job's lease (as if its host died), then reap it: lost, attempts not counted."""
    with engine.begin() as conn:
        conn.execute(sa.update(Job).where(Job.id == job_id).values(lease_expires_at=sa.func.datetime("2000-01-01")
                                                                    if conn.dialect.name == "sqlite" else
                                                                    sa.text("TIMESTAMP '2000-01-01'")))
    assert reap(engine=engine) == 1


def test_status_fits_80_columns_without_cutting_cells(sqlite_url):
    engine = make_engine(sqlite_url)
    enqueue_sleep(engine=engine, count=3, seconds=0, tag="a-rather-long-grid-name")
    take(engine)
    with engine.begin() as conn:
        conn.execute(sa.update(Job).values(total_steps=30000, step=12345, best_val_loss=1.8123, last_val_loss=1.8456,
                                           tokens_per_s=123456.0, steps_per_s=2.0))
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(render(snapshot(engine=engine, grid=None), grid=None, width=80))
    text = console.file.getvalue()
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines) <= 80
    assert "…" not in text
    assert "12345/30000" in text and "running" in text and "1.8123" in text


def test_status_of_an_unknown_grid_is_an_error(cli, sqlite_url):
    make_engine(sqlite_url).dispose()
    code, out, err = cli("status", "--grid", "nosuch", "--db", sqlite_url)
    assert code == 2 and err.startswith("error: unknown grid 'nosuch'") and out == ""
    code, out, _ = cli("status", "--grid", "smoke", "--db", sqlite_url)  # known, just empty
    assert code == 0 and "no jobs in grid smoke" in out


def test_status_json_shows_attempts_run_apart_from_retries(cli, sqlite_url):
    engine = make_engine(sqlite_url)
    (job_id,) = enqueue_sleep(engine=engine, count=1, seconds=0).job_ids
    take(engine)
    lose(engine, job_id)  # a crash: requeued without using a retry
    take(engine)
    code, out, _ = cli("status", "--json", "--db", sqlite_url)
    (job,) = json.loads(out)["jobs"]
    assert code == 0 and job["attempts"] == 2 and job["retries_used"] == 0 and job["max_retries"] == 1


def test_retry_that_changes_nothing_says_why(cli, sqlite_url):
    engine = make_engine(sqlite_url)
    enqueue_sleep(engine=engine, count=1, seconds=0)
    before = dump(sqlite_url)
    code, out, err = cli("retry", "1", "--db", sqlite_url)
    assert code == 2 and out == ""
    assert err.strip() == "error: nothing to retry: job 1 is queued; retry takes failed or cancelled jobs"
    assert dump(sqlite_url) == before


def test_logs_of_a_missing_attempt_blames_the_number(cli, sqlite_url):
    engine = make_engine(sqlite_url)
    enqueue_sleep(engine=engine, count=1, seconds=0)
    take(engine)
    code, _, err = cli("logs", "1", "--attempt", "5", "--db", sqlite_url)
    assert code == 2 and err.strip() == "error: job 1 has no attempt 5: it ran 1 attempt(s), numbered 1 to 1"


def _expire(engine, job_id: int) -> None:  # noqa: ANN001
    with engine.begin() as conn:
        past = sa.func.datetime("2000-01-01") if conn.dialect.name == "sqlite" else sa.text("TIMESTAMP '2000-01-01'")
        conn.execute(sa.update(Job).where(Job.id == job_id).values(lease_expires_at=past))


def test_status_reads_and_leaves_an_expired_lease_to_the_reapers(cli, sqlite_url):
    engine = make_engine(sqlite_url)
    (job_id,) = enqueue_sleep(engine=engine, count=1, seconds=0).job_ids
    take(engine)
    _expire(engine, job_id)
    before = dump(sqlite_url)
    code, out, _ = cli("status", "--json", "--db", sqlite_url)
    assert code == 0 and json.loads(out)["jobs"][0]["state"] == "running"
    assert dump(sqlite_url) == before
    assert reap(engine=engine) == 1  # the lease really was reapable: status chose not to


def test_status_colours_a_heartbeat_by_its_own_workers_ttl(sqlite_url):
    engine = make_engine(sqlite_url)
    enqueue_sleep(engine=engine, count=2, seconds=0)
    register_worker(engine=engine, worker_id="slow", host="h", pid=1, gpu="0", version="0", heartbeat_s=300.0,
                    lease_ttl_s=1800.0)
    register_worker(engine=engine, worker_id="fast", host="h", pid=2, gpu="0", version="0", heartbeat_s=1.0,
                    lease_ttl_s=3.0)
    take(engine, "slow")
    take(engine, "fast")
    with engine.begin() as conn:  # both last beat 200 s ago: past the default 180 s TTL
        conn.execute(sa.update(Job).values(heartbeat_at=sa.func.datetime("now", "-200 seconds")))
    jobs = {j["worker"]: j for j in snapshot(engine=engine, grid=None)["jobs"]}
    assert (jobs["slow"]["heartbeat_s"], jobs["slow"]["lease_ttl_s"]) == (300.0, 1800.0)
    assert job_heartbeat_style(jobs["slow"]) == "green"  # within its own interval
    assert job_heartbeat_style(jobs["fast"]) == "red"
    assert job_heartbeat_style({**jobs["slow"], "heartbeat_s": None, "lease_ttl_s": None}) == "red"  # the defaults
