"""Queue operations on both backends (SQLite file and PostgreSQL): idempotent enqueue and grid linking,
claim order, fencing of stale leases, the retry policy (preempted / failed / terminal / lost / poison),
reaping (expired lease, dead pid, reused pid), eval idempotence and the admin state changes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fixtures.sleep_kind import enqueue_sleep
from fixtures.workers import wait_for

from haares.errors import HaaresError
from haares.grids import expand, get_grid
from haares.jobs import (
    cancel,
    claim,
    db_now,
    enqueue_runs,
    finish,
    heartbeat,
    hold,
    job_rows,
    make_engine,
    process_start_time,
    reap,
    record_eval,
    release,
    retry,
    set_attempt_device,
    state_counts,
)
from haares.jobs.db import run_write
from haares.jobs.schema import Attempt, Eval, Event, GridRun, Job

HOST = "test-host"


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def grab(engine, *, ttl=60.0, worker="w1", pid=None, pid_start=None, host=HOST):
    """Claim as a worker of this process (by default with this process's pid and start time)."""
    pid = os.getpid() if pid is None else pid
    if pid_start is None and pid == os.getpid():
        pid_start = process_start_time(pid)
    return claim(engine=engine, worker_id=worker, host=host, pid=pid, pid_start=pid_start, gpu="0", lease_ttl_s=ttl)


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()


def job(engine, job_id):
    with engine.connect() as conn:
        return conn.execute(sa.select(Job).where(Job.id == job_id)).one()


def expire(engine, job_id):
    """Move a job's lease (and not_before) into the past, as if the clock had advanced past the TTL."""

    def body(conn):
        past = db_now(conn) - timedelta(seconds=5)
        conn.execute(sa.update(Job).where(Job.id == job_id).values(lease_expires_at=past, not_before=past))

    run_write(engine, body)


def lose(engine, lease) -> None:
    expire(engine, lease.job_id)
    assert reap(engine=engine) == 1


def main48(engine, **kw):
    return enqueue_runs(engine=engine, grid="main48", runs=expand(get_grid("main48"), **kw), code_ref="abc")


# --- enqueue ----------------------------------------------------------------------------------------


def test_enqueue_is_idempotent(engine):
    first = main48(engine)
    second = main48(engine)
    assert (first.new, first.existing) == (9, 0)
    assert (second.new, second.existing) == (0, 9)
    assert first.job_ids == second.job_ids
    assert count(engine, Job) == 9 and count(engine, GridRun) == 9


def test_seeds_select_without_changing_keys(engine):
    some = main48(engine, seeds=(42,))
    whole = main48(engine)
    assert (some.new, whole.new, whole.existing) == (3, 6, 3)
    assert count(engine, Job) == 9
    assert set(some.job_ids) <= set(whole.job_ids)


def test_shared_runs_are_linked_not_duplicated(engine):
    main48(engine)
    abl = enqueue_runs(engine=engine, grid="ablations", runs=expand(get_grid("ablations")), code_ref="abc")
    assert (abl.new, abl.existing) == (18, 6)  # block_attnres and haares x 3 seeds are main48's runs
    assert count(engine, Job) == 27
    with engine.connect() as conn:
        both = conn.execute(
            sa.select(GridRun.job_id).group_by(GridRun.job_id).having(sa.func.count() == 2)
        ).scalars().all()
        methods = conn.execute(sa.select(Job.method).where(Job.id.in_(both))).scalars().all()
    assert len(both) == 6 and set(methods) == {"block_attnres", "haares"}
    assert state_counts(engine=engine) == {"ablations": {"queued": 24}, "main48": {"queued": 9}}
    rows = job_rows(engine=engine, grid="ablations")
    assert len(rows) == 24 and all(r["grids"] for r in rows)
    assert sorted(next(r for r in rows if r["job_id"] == both[0])["grids"]) == ["ablations", "main48"]


def test_other_code_ref_is_reported_not_duplicated(engine):
    main48(engine)
    again = enqueue_runs(engine=engine, grid="main48", runs=expand(get_grid("main48")), code_ref="def")
    assert (again.new, again.existing, again.other_code_ref) == (0, 9, 9)
    assert count(engine, Job) == 9


# --- claim -----------------------------------------------------------------------------------------


def test_claim_order_priority_then_pair_then_method(engine):
    main48(engine)
    urgent = enqueue_sleep(engine=engine, count=1, seconds=0, priority=5).job_ids[0]
    order = []
    while (lease := grab(engine)) is not None:
        order.append((lease.job_id, lease.method, lease.seed))
        assert finish(engine=engine, lease=lease, outcome="succeeded")
    assert order[0][0] == urgent
    assert [(m, s) for _, m, s in order[1:4]] == [("standard", 42), ("block_attnres", 42), ("haares", 42)]
    assert [s for *_, s in order[1:]] == [42] * 3 + [123] * 3 + [2026] * 3
    assert count(engine, Attempt) == 10 and count(engine, Attempt, Attempt.outcome == "succeeded") == 10


def test_claim_records_attempt_and_lease(engine):
    [jid] = enqueue_sleep(engine=engine, count=1, seconds=0).job_ids
    lease = grab(engine)
    assert lease.job_id == jid and lease.kind == "sleep" and lease.attempt_no == 1 and not lease.fresh
    row = job(engine, jid)
    assert row.status == "running" and row.lease_token == lease.token and row.attempts == 1
    assert row.lease_expires_at > row.heartbeat_at
    assert grab(engine) is None  # nothing left
    assert grab(engine, ttl=1) is None
    assert set_attempt_device(engine=engine, lease=lease, device_name="cpu")
    with engine.connect() as conn:
        att = conn.execute(sa.select(Attempt)).one()
    assert (att.worker, att.host, att.pid, att.device_name, att.ended_at) == ("w1", HOST, os.getpid(), "cpu", None)


def test_held_jobs_are_not_claimed(engine):
    ids = enqueue_sleep(engine=engine, count=2, seconds=0).job_ids
    assert hold(engine=engine, job_ids=[ids[0]]) == 1
    assert grab(engine).job_id == ids[1]
    assert grab(engine) is None
    assert release(engine=engine, grid="sleep") == 1
    assert grab(engine).job_id == ids[0]


# --- fencing ---------------------------------------------------------------------------------------


def test_stale_token_changes_nothing_after_reap(engine):
    enqueue_sleep(engine=engine, count=1, seconds=0)
    old = grab(engine, worker="old")
    lose(engine, old)
    new = grab(engine, worker="new")
    assert new.job_id == old.job_id and new.token != old.token and new.attempt_no == 2
    before = job(engine, old.job_id)
    assert heartbeat(engine=engine, lease=old, lease_ttl_s=60, progress={"step": 99}).alive is False
    assert record_eval(engine=engine, lease=old, point={"step": 5, "tokens": 1, "train_seconds": 1.0,
                                                        "val_loss": 1.0}) is False
    assert set_attempt_device(engine=engine, lease=old, device_name="zombie") is False
    assert finish(engine=engine, lease=old, outcome="succeeded", result={"x": 1}) is False
    after = job(engine, old.job_id)
    assert before == after and after.status == "running" and after.lease_owner == "new"
    assert count(engine, Eval) == 0
    with engine.connect() as conn:
        outcomes = conn.execute(sa.select(Attempt.attempt_no, Attempt.outcome, Attempt.device_name)
                                .order_by(Attempt.attempt_no)).all()
    assert [tuple(o) for o in outcomes] == [(1, "lost", None), (2, None, None)]
    assert heartbeat(engine=engine, lease=new, lease_ttl_s=60).alive
    assert finish(engine=engine, lease=new, outcome="succeeded")


# --- retry policy ----------------------------------------------------------------------------------


def test_preempted_requeues_without_using_attempts(engine):
    [jid] = enqueue_sleep(engine=engine, count=1, seconds=0).job_ids
    for n in range(1, 4):
        lease = grab(engine)
        assert lease.attempt_no == n
        assert finish(engine=engine, lease=lease, outcome="preempted", exit_code=143, end_step=10 * n)
        row = job(engine, jid)
        assert (row.status, row.attempts, row.step) == ("queued", 0, 10 * n)
    assert grab(engine).step == 30  # a resume lands where the preempted attempt stopped


def test_terminal_failure_is_not_retried(engine):
    [jid] = enqueue_sleep(engine=engine, count=1, seconds=0).job_ids
    lease = grab(engine)
    assert finish(engine=engine, lease=lease, outcome="failed", terminal=True, error="CUDA out of memory")
    row = job(engine, jid)
    assert row.status == "failed" and "out of memory" in row.error_summary
    assert grab(engine) is None


def test_other_failure_is_retried_once_after_backoff(engine):
    [jid] = enqueue_sleep(engine=engine, count=1, seconds=0).job_ids
    assert finish(engine=engine, lease=grab(engine), outcome="failed", error="boom", exit_code=1)
    row = job(engine, jid)
    assert row.status == "queued" and row.attempts == 1
    with engine.connect() as conn:
        assert row.not_before > db_now(conn)  # backoff: not claimable yet
    assert grab(engine) is None
    expire(engine, jid)
    second = grab(engine)
    assert second.attempt_no == 2
    assert finish(engine=engine, lease=second, outcome="failed", error="boom again", exit_code=1)
    assert job(engine, jid).status == "failed"
    assert grab(engine) is None


def test_lost_does_not_consume_attempts_and_three_losses_poison(engine):
    [jid] = enqueue_sleep(engine=engine, count=1, seconds=0).job_ids
    for n in (1, 2):
        lose(engine, grab(engine))
        row = job(engine, jid)
        assert (row.status, row.attempts, row.lost_count) == ("queued", 0, n)
    lose(engine, grab(engine))
    row = job(engine, jid)
    assert row.status == "failed" and row.lost_count == 3 and "poison" in row.error_summary
    with engine.connect() as conn:
        assert conn.execute(sa.select(Event.kind).where(Event.job_id == jid).order_by(Event.id.desc())).first()[0] \
            == "poison"


def test_succeeded_is_never_mutated(engine):
    [jid] = enqueue_sleep(engine=engine, count=1, seconds=0).job_ids
    lease = grab(engine)
    assert finish(engine=engine, lease=lease, outcome="succeeded", result={"best": 1.5}, end_step=100)
    before = job(engine, jid)
    assert before.status == "succeeded" and before.step == 100 and '"best"' in before.result_json
    for op in (cancel, hold, release, retry):
        assert op(engine=engine, job_ids=[jid]) == 0
    assert retry(engine=engine, job_ids=[jid], fresh=True) == 0
    assert finish(engine=engine, lease=lease, outcome="failed") is False
    assert heartbeat(engine=engine, lease=lease, lease_ttl_s=60).alive is False
    expire(engine, jid)
    assert reap(engine=engine, host=HOST) == 0
    after = job(engine, jid)
    assert after.status == "succeeded" and after.step == before.step and after.result_json == before.result_json


# --- reaping ---------------------------------------------------------------------------------------


def test_reap_same_host_dead_pid_at_once(engine):
    enqueue_sleep(engine=engine, count=1, seconds=0)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lease = grab(engine, pid=gone.pid, pid_start=None, ttl=3600)
    assert reap(engine=engine) == 0  # lease valid and no host given: nothing to do
    assert reap(engine=engine, host="another-host") == 0  # not ours to judge
    assert reap(engine=engine, host=HOST) == 1
    row = job(engine, lease.job_id)
    assert (row.status, row.lost_count, row.attempts) == ("queued", 1, 0)
    assert reap(engine=engine, host=HOST) == 0  # idempotent


def test_reap_live_pid_with_other_start_time_counts_as_dead(engine):
    enqueue_sleep(engine=engine, count=2, seconds=0)
    me = os.getpid()
    real = grab(engine, pid=me, pid_start=process_start_time(me), ttl=3600)
    reused = grab(engine, pid=me, pid_start=process_start_time(me) + 1000.0, ttl=3600)
    assert reap(engine=engine, host=HOST) == 1
    assert job(engine, reused.job_id).status == "queued"
    assert job(engine, real.job_id).status == "running"


def test_reap_cancel_requested_lost_job_becomes_cancelled(engine):
    [jid] = enqueue_sleep(engine=engine, count=1, seconds=0).job_ids
    lease = grab(engine)
    assert cancel(engine=engine, job_ids=[jid]) == 1
    assert heartbeat(engine=engine, lease=lease, lease_ttl_s=60) .cancel_requested
    lose(engine, lease)
    assert job(engine, jid).status == "cancelled"


# --- evals and progress ----------------------------------------------------------------------------


def test_record_eval_is_idempotent_per_step(engine):
    main48(engine)
    lease = grab(engine)
    pt = {"step": 10, "tokens": 80, "train_seconds": 1.0, "val_loss": 3.0, "tokens_per_s": 80.0, "steps_per_s": 10.0}
    assert record_eval(engine=engine, lease=lease, point=pt)
    assert record_eval(engine=engine, lease=lease, point={**pt, "step": 20, "val_loss": 2.0})
    assert record_eval(engine=engine, lease=lease, point={**pt, "step": 30, "val_loss": 2.5})
    assert record_eval(engine=engine, lease=lease, point={**pt, "step": 20, "val_loss": 2.2})  # re-reported
    assert count(engine, Eval, Eval.job_id == lease.job_id) == 3
    row = job(engine, lease.job_id)
    assert (row.best_val_loss, row.last_val_loss, row.step) == (2.2, 2.5, 20)
    assert heartbeat(engine=engine, lease=lease, lease_ttl_s=60,
                     progress={"step": 40, "train_loss": 2.4, "steps_per_s": 4.0}).alive
    [status] = [r for r in job_rows(engine=engine) if r["job_id"] == lease.job_id]
    assert status["state"] == "running" and status["step"] == 40 and status["worker"] == "w1"
    assert status["eta_s"] == pytest.approx((30_000 - 40) / 4.0)
    assert 0 <= status["heartbeat_age_s"] < 60


def test_retry_fresh_forgets_progress(engine):
    [jid] = enqueue_sleep(engine=engine, count=1, seconds=0).job_ids
    lease = grab(engine)
    assert record_eval(engine=engine, lease=lease, point={"step": 5, "tokens": 1, "train_seconds": 1.0,
                                                          "val_loss": 1.0})
    assert finish(engine=engine, lease=lease, outcome="failed", terminal=True, end_step=7)
    assert retry(engine=engine, job_ids=[jid]) == 1
    resumed = grab(engine)
    assert resumed.step == 7 and not resumed.fresh
    assert finish(engine=engine, lease=resumed, outcome="cancelled")
    assert job(engine, jid).status == "cancelled"
    assert retry(engine=engine, grid="sleep", fresh=True) == 1
    assert count(engine, Eval) == 0
    fresh = grab(engine)
    assert fresh.step == 0 and fresh.fresh and fresh.attempt_no == 3
    assert record_eval(engine=engine, lease=fresh, point={"step": 1, "tokens": 1, "train_seconds": 1.0,
                                                          "val_loss": 1.0})
    assert job(engine, jid).fresh_start is False  # its first eval wrote a new checkpoint


# --- admin -----------------------------------------------------------------------------------------


def test_cancel_queued_and_running(engine):
    ids = enqueue_sleep(engine=engine, count=3, seconds=0).job_ids
    lease = grab(engine)
    assert cancel(engine=engine, grid="sleep") == 3
    assert [job(engine, i).status for i in ids] == ["running", "cancelled", "cancelled"]
    beat = heartbeat(engine=engine, lease=lease, lease_ttl_s=60)
    assert beat.alive and beat.cancel_requested
    assert finish(engine=engine, lease=lease, outcome="cancelled", exit_code=-15)
    assert state_counts(engine=engine) == {"sleep": {"cancelled": 3}}


def test_unknown_job_or_grid_changes_nothing(engine):
    ids = enqueue_sleep(engine=engine, count=2, seconds=0).job_ids
    events = count(engine, Event)
    for op in (cancel, hold, release, retry):
        with pytest.raises(HaaresError, match="no job with id 999"):
            op(engine=engine, job_ids=[ids[0], 999])
        with pytest.raises(HaaresError, match="no jobs in grid"):
            op(engine=engine, grid="main48")
        with pytest.raises(HaaresError, match="name the jobs"):
            op(engine=engine)
    assert count(engine, Event) == events
    assert [job(engine, i).status for i in ids] == ["queued", "queued"]


def test_finish_rejects_unknown_outcome(engine):
    enqueue_sleep(engine=engine, count=1, seconds=0)
    with pytest.raises(ValueError, match="outcome"):
        finish(engine=engine, lease=grab(engine), outcome="lost")


def test_db_now_is_naive_utc(engine):
    from datetime import datetime, timezone

    with engine.connect() as conn:
        now = db_now(conn)
    assert now.tzinfo is None
    assert abs((now - datetime.now(timezone.utc).replace(tzinfo=None)).total_seconds()) < 120


def test_lease_expiry_uses_real_clock(engine):
    enqueue_sleep(engine=engine, count=1, seconds=0)
    lease = grab(engine, ttl=0.05)
    # Reaped as soon as the database's clock passes the 50 ms lease (polled, not a fixed sleep).
    assert wait_for(lambda: reap(engine=engine), timeout=10, what="the 50 ms lease to expire", every=0.02) == 1
    assert heartbeat(engine=engine, lease=lease, lease_ttl_s=60).alive is False


def test_claim_starts_the_attempt_at_the_recorded_checkpoint_not_at_the_reported_progress(engine):
    from haares.jobs import record_checkpoint

    [jid] = enqueue_sleep(engine=engine, count=1, seconds=0).job_ids
    first = grab(engine)
    assert first.start_step == 0  # nothing recorded yet
    assert record_checkpoint(engine=engine, lease=first, host=HOST, ckpt_dir="/runs/x", step=30)
    assert heartbeat(engine=engine, lease=first, lease_ttl_s=60, progress={"step": 47}).alive  # past the checkpoint
    assert finish(engine=engine, lease=first, outcome="preempted", end_step=47)
    second = grab(engine)
    assert (second.step, second.ckpt_step, second.start_step) == (47, 30, 30)
    with engine.connect() as conn:
        assert conn.execute(sa.select(Attempt.start_step).where(Attempt.job_id == jid, Attempt.attempt_no == 2)
                            ).scalar_one() == 30
    assert finish(engine=engine, lease=second, outcome="failed", terminal=True)
    assert retry(engine=engine, job_ids=[jid], fresh=True) == 1
    assert grab(engine).start_step == 0  # retry --fresh: the checkpoint is not resumed
