"""A zombie worker cannot write: SIGSTOP it past its lease TTL, let another worker reclaim, SIGCONT it.

Real `haares worker` processes and a sleep job. The frozen worker's child keeps sleeping; after the
second worker reclaims the job (attempt 1 recorded as lost by the reaper), the first one wakes, learns
from its heartbeat that the lease is gone, kills its child before that child finishes, records nothing
(attempt rows, job state and the execution log stay as the second worker left them) and exits cleanly.
Also: `haares cancel` of a running job makes its worker stop the child and record the attempt cancelled;
a database that stays unreachable for 0.8 x TTL (the test holds the SQLite write lock) makes the worker
stop its child, and the job goes back to the queue without using a retry.
"""

from __future__ import annotations

import signal

import pytest
import sqlalchemy as sa
from fixtures.sleep_kind import enqueue_sleep
from fixtures.workers import rows, start_worker, wait_for

from haares.jobs.db import db_now, make_engine
from haares.jobs.procs import process_start_time
from haares.jobs.schema import Job

# The first attempt's child must still be sleeping when the zombie wakes (after the rescuer's start-up
# and claim, however loaded the machine; the zombie kills it then, so its length costs nothing); the
# rescuer's own attempt need not sleep long to prove the same things.
SLEEP_S, RESCUE_SLEEP_S = 20.0, 0.5
FAST = ("--gpu", "cpu", "--heartbeat", "0.3", "--lease-ttl", "1.5", "--poll", "0.5", "--once")


def _child_pid(pid: int) -> int:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        (child,) = [int(x) for x in f.read().split()]
    return child


def _lease_expired(engine) -> bool:  # noqa: ANN001
    with engine.connect() as conn:
        now = db_now(conn)
        return conn.execute(sa.select(Job.id).where(Job.status == "running", Job.lease_expires_at < now)).first() \
            is not None


@pytest.mark.slow
def test_stopped_worker_is_fenced_out_and_kills_its_child(db_url, tmp_path, home):
    engine = make_engine(db_url)
    enqueue_sleep(engine=engine, count=1, seconds=SLEEP_S, later_seconds=RESCUE_SLEEP_S)
    executions = tmp_path / "executions.txt"
    env = {"HAARES_SLEEP_LOG": str(executions)}

    zombie = start_worker(db_url, *FAST, log=tmp_path / "zombie.log", env=env)
    wait_for(lambda: rows(engine, "SELECT log_path FROM attempts WHERE log_path IS NOT NULL"), timeout=30,
             what="the first worker's child")
    zombie_child = _child_pid(zombie.pid)
    zombie.send_signal(signal.SIGSTOP)
    try:
        # Past the 1.5 s TTL (database clock): the lease has expired, though its holder still exists.
        wait_for(lambda: _lease_expired(engine), timeout=30, what="the frozen worker's lease to expire")
        rescuer = start_worker(db_url, *FAST, log=tmp_path / "rescuer.log", env=env)
        wait_for(lambda: rows(engine, "SELECT 1 FROM attempts WHERE attempt_no = 2"), timeout=30,
                 what="the second worker's claim")
        assert rows(engine, "SELECT outcome FROM attempts WHERE attempt_no = 1") == [("lost",)]
        assert process_start_time(zombie_child) is not None  # still sleeping: a real zombie attempt
    finally:
        zombie.send_signal(signal.SIGCONT)
    wait_for(lambda: process_start_time(zombie_child) is None, timeout=10, what="the zombie's child to be killed")
    assert zombie.wait(timeout=20) == 0
    assert "lease lost" in (tmp_path / "zombie.log").read_text()

    assert rescuer.wait(timeout=60) == 0, (tmp_path / "rescuer.log").read_text()
    job_id = rows(engine, "SELECT id FROM jobs")[0][0]
    # Only the rescuer's child ran to the end: a zombie child that finished by itself would add a line.
    assert executions.read_text().split() == [str(job_id)]
    assert rows(engine, "SELECT status, attempts, lost_count FROM jobs") == [("succeeded", 1, 1)]
    attempts = rows(engine, "SELECT attempt_no, outcome, exit_code FROM attempts ORDER BY attempt_no")
    assert attempts == [(1, "lost", None), (2, "succeeded", 0)]
    engine.dispose()


@pytest.mark.slow
def test_cancel_of_a_running_job_stops_its_child_and_records_cancelled(sqlite_url, tmp_path, home):
    from haares.jobs import cancel

    engine = make_engine(sqlite_url)
    (job_id,) = enqueue_sleep(engine=engine, count=1, seconds=60.0).job_ids
    worker = start_worker(sqlite_url, *FAST, log=tmp_path / "w.log")
    wait_for(lambda: rows(engine, "SELECT log_path FROM attempts WHERE log_path IS NOT NULL"), timeout=30,
             what="the child to start")
    child = _child_pid(worker.pid)
    assert cancel(engine=engine, job_ids=[job_id]) == 1
    assert worker.wait(timeout=20) == 0  # well before the 60 s sleep would end
    assert process_start_time(child) is None
    assert rows(engine, "SELECT status FROM jobs") == [("cancelled",)]
    assert rows(engine, "SELECT outcome FROM attempts") == [("cancelled",)]
    engine.dispose()


@pytest.mark.slow
def test_database_unreachable_past_ttl_stops_the_child(sqlite_url, tmp_path, home):
    """A heartbeat that cannot commit (the test holds SQLite's write lock) for 0.8 x TTL: SIGTERM the child."""
    import sqlite3

    engine = make_engine(sqlite_url)
    enqueue_sleep(engine=engine, count=1, seconds=60.0)
    worker = start_worker(sqlite_url, "--gpu", "cpu", "--heartbeat", "0.3", "--lease-ttl", "2", "--once",
                          log=tmp_path / "w.log")
    wait_for(lambda: rows(engine, "SELECT log_path FROM attempts WHERE log_path IS NOT NULL"), timeout=30,
             what="the child to start")
    child = _child_pid(worker.pid)
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # every write (heartbeats included) now waits
    try:
        wait_for(lambda: process_start_time(child) is None, timeout=10,
                 what="the child to be stopped while the database is unreachable")
        assert worker.poll() is None  # the worker itself waits for the database to come back
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert worker.wait(timeout=60) == 0, (tmp_path / "w.log").read_text()
    assert "no lease renewal" in (tmp_path / "w.log").read_text()
    # Handed back either as preempted (the worker's finish won) or lost (its own reaper's expiry won);
    # neither uses a retry.
    assert rows(engine, "SELECT status, attempts FROM jobs") == [("queued", 0)]
    assert rows(engine, "SELECT outcome FROM attempts")[0][0] in ("preempted", "lost")
    engine.dispose()
