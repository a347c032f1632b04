"""`haares worker --time-limit` and SIGUSR1: durations, the claim rule, and real workers that stop in time.

Pure parts (parse_duration, Deadline, estimate_seconds) against values worked out by hand; the claim
rule against a database whose attempt history is written through the queue API under a fake clock;
real `haares worker` processes on sleep jobs (a job that cannot finish is never claimed; one still
running at the limit is handed back preempted with its retry unused; SIGUSR1 acts like SIGTERM).
"""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import datetime, timedelta

import pytest
from fixtures.sleep_kind import enqueue_sleep
from fixtures.workers import HAARES, rows, start_worker, tiny_runs, wait_for

from haares.errors import HaaresError
from haares.jobs import claim, db, enqueue_runs, finish, make_engine
from haares.timelimit import Deadline, claimable_ids, estimate_seconds, parse_duration, shape_key, slurm_time

FAST = ("--gpu", "cpu", "--heartbeat", "0.3", "--lease-ttl", "3", "--poll", "0.3")


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("9m", 540), ("1h30m", 5400), ("1.5h", 5400), ("2d", 172800), ("1:30:00", 5400),
    ("09:30", 570), ("1-02:00:00", 93600), (" 10M ", 600),
])
def test_parse_duration_reads_units_and_clock_forms(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "90", "9 minutes", "1h-30m", "0s", "1:2:3:4", "abc", "-5m"])
def test_parse_duration_refuses_what_it_cannot_read(text):
    with pytest.raises(HaaresError, match="duration"):
        parse_duration(text)


def test_slurm_time_is_hh_mm_ss_with_days_when_needed():
    assert slurm_time(120) == "0:02:00"
    assert slurm_time(5400.2) == "1:30:01"
    assert slurm_time(93600) == "1-02:00:00"


def test_deadline_rules_known_and_unknown_estimates():
    d = Deadline(limit_s=100, margin_s=10, claim_fraction=0.5, start=0.0)
    assert d.usable(now=20) == 70 and not d.preempt_due(now=89) and d.preempt_due(now=90)
    assert d.may_start(70, now=20) and not d.may_start(70.5, now=20)
    assert d.may_start(None, now=49) and not d.may_start(None, now=51)  # unknown: more than half must remain
    with pytest.raises(HaaresError, match="checkpoint-margin"):
        Deadline(limit_s=10, margin_s=10)


def test_estimate_is_safety_times_slowest_rate_plus_startup():
    assert estimate_seconds(kind="train", config={}, remaining_steps=100, seconds_per_step=0.4) == 15 + 1.25 * 40
    assert estimate_seconds(kind="train", config={}, remaining_steps=100, seconds_per_step=None) is None
    assert estimate_seconds(kind="sleep", config={"seconds": 3}, remaining_steps=0, seconds_per_step=None) == 4


def test_shape_ignores_seed_steps_and_lr_but_not_the_model():
    a, b, c = (s.config.to_dict() for s in tiny_runs(**{"train.steps": 7})[:3])
    twin_seed = {**a, "seed": 999, "train": {**a["train"], "steps": 5, "lr": 0.1}}
    assert shape_key(a) == shape_key(twin_seed)
    assert shape_key(a) != shape_key({**a, "model": {**a["model"], "d_model": 64}})


def test_claimable_ids_use_the_history_of_the_same_shape_and_local_checkpoints(sqlite_url, tmp_path, monkeypatch):
    """A finished attempt of 40 steps in 50 s (1.25 s/step) predicts 15 + 1.25 x 1.25 x 40 = 77.5 s for its
    seed twin, 46.25 s when a local checkpoint of step 20 exists; another shape has no estimate."""
    t0 = datetime(2030, 1, 1)
    clock = {"now": t0}
    monkeypatch.setattr(db, "clock", lambda: clock["now"])
    engine = make_engine(sqlite_url)
    specs = tiny_runs(**{"train.steps": 40})
    other = tiny_runs(**{"train.steps": 40, "model.d_model": 64})[0]
    enqueue_runs(engine=engine, grid="smoke", runs=[specs[0], specs[3], other])  # seeds 42 and 123 of one method
    lease = claim(engine=engine, worker_id="w", host="h", pid=1, pid_start=None, gpu="cpu", lease_ttl_s=600)
    clock["now"] = t0 + timedelta(seconds=50)
    assert finish(engine=engine, lease=lease, outcome="succeeded", result={}, end_step=40)
    twin_id = rows(engine, "SELECT id FROM jobs WHERE run_key = :k", k=specs[3].run_key)[0][0]
    other_id = rows(engine, "SELECT id FROM jobs WHERE run_key = :k", k=other.run_key)[0][0]
    runs = tmp_path / "runs"

    def fits(limit: float) -> list[int]:
        return sorted(claimable_ids(engine=engine, deadline=Deadline(limit, 10, 0.5), kinds=("train",), runs_dir=runs)[0])

    assert fits(88) == sorted([twin_id, other_id])  # 77.5 s fit in 78 usable seconds; unknown shape: > half remains
    assert fits(87) == [other_id]
    twin_key = rows(engine, "SELECT run_key FROM jobs WHERE id = :i", i=twin_id)[0][0]
    (runs / twin_key / "checkpoints").mkdir(parents=True)
    (runs / twin_key / "checkpoints" / "step_00000020.ckpt").write_bytes(b"")
    assert fits(57) == sorted([twin_id, other_id])  # 46.25 s in 47
    assert fits(56) == [other_id]
    engine.dispose()


def test_a_worker_times_shapes_by_its_own_attempts_only(sqlite_url, tmp_path, monkeypatch):
    """Another worker's slow attempt (another allocation, other slots) does not refuse a job: without an
    attempt of its own the worker treats the shape as unknown (claimed while more than half remains)."""
    t0 = datetime(2030, 1, 1)
    clock = {"now": t0}
    monkeypatch.setattr(db, "clock", lambda: clock["now"])
    engine = make_engine(sqlite_url)
    specs = tiny_runs(**{"train.steps": 40})
    enqueue_runs(engine=engine, grid="smoke", runs=[specs[0], specs[3]])
    lease = claim(engine=engine, worker_id="old", host="h", pid=1, pid_start=None, gpu="0", lease_ttl_s=600)
    clock["now"] = t0 + timedelta(seconds=400)  # 10 s/step: 515 s predicted for its twin
    assert finish(engine=engine, lease=lease, outcome="succeeded", result={}, end_step=40)
    twin_id = rows(engine, "SELECT id FROM jobs WHERE status = 'queued'")[0][0]

    def fits(worker: str | None) -> list[int]:
        return claimable_ids(engine=engine, deadline=Deadline(100, 10, 0.5), kinds=("train",),
                             runs_dir=tmp_path / "runs", worker=worker)[0]

    assert fits("old") == [] and fits(None) == []
    assert fits("new") == [twin_id]
    engine.dispose()


@pytest.mark.slow
def test_worker_skips_jobs_that_cannot_finish_and_exits_zero(sqlite_url, tmp_path, home):
    engine = make_engine(sqlite_url)
    enqueue_sleep(engine=engine, count=1, seconds=60, priority=1)  # first in claim order, never fits
    enqueue_sleep(engine=engine, count=2, seconds=0.2)
    worker = start_worker(sqlite_url, *FAST, "--time-limit", "20s", "--checkpoint-margin", "2", log=tmp_path / "w.log")
    assert worker.wait(timeout=60) == 0
    log = (tmp_path / "w.log").read_text()
    assert "1 queued job(s) cannot finish" in log and "2 claimed: 2 succeeded" in log
    assert rows(engine, "SELECT priority, status, attempts FROM jobs ORDER BY id") == [
        (1, "queued", 0), (0, "succeeded", 1), (0, "succeeded", 1)]
    assert rows(engine, "SELECT COUNT(*) FROM attempts WHERE job_id = 1") == [(0,)]
    engine.dispose()


@pytest.mark.slow
def test_job_running_at_the_limit_is_preempted_with_its_retry_unused(sqlite_url, tmp_path, home):
    """No estimate for a training job (no history): claimed while more than half the limit remains, then
    handed back at the limit minus the margin; nothing stays running and the worker exits 0."""
    engine = make_engine(sqlite_url)
    enqueue_runs(engine=engine, grid="smoke", runs=tiny_runs(**{"train.steps": 100000, "train.eval_every": 50})[:1])
    worker = start_worker(sqlite_url, *FAST, "--time-limit", "12s", "--checkpoint-margin", "5",
                          log=tmp_path / "w.log", env={"OMP_NUM_THREADS": "1"})
    assert worker.wait(timeout=90) == 0
    log = (tmp_path / "w.log").read_text()
    assert "stopped by time limit; 1 claimed: 1 preempted" in log
    assert rows(engine, "SELECT status, attempts FROM jobs") == [("queued", 0)]
    assert rows(engine, "SELECT outcome FROM attempts") == [("preempted",)]
    engine.dispose()


@pytest.mark.slow
def test_sigusr1_preempts_like_sigterm(sqlite_url, tmp_path, home):
    engine = make_engine(sqlite_url)
    enqueue_sleep(engine=engine, count=1, seconds=60)
    worker = start_worker(sqlite_url, *FAST, log=tmp_path / "w.log")
    wait_for(lambda: rows(engine, "SELECT 1 FROM attempts WHERE log_path IS NOT NULL"), timeout=30, what="the claim")
    worker.send_signal(signal.SIGUSR1)
    assert worker.wait(timeout=30) == 0
    assert "stopped by SIGUSR1; 1 claimed: 1 preempted" in (tmp_path / "w.log").read_text()
    assert rows(engine, "SELECT status, attempts FROM jobs") == [("queued", 0)]
    assert rows(engine, "SELECT outcome FROM attempts") == [("preempted",)]
    engine.dispose()


@pytest.mark.parametrize("args, message", [
    (["--time-limit", "soon"], "cannot read 'soon' as a duration"),
    (["--time-limit", "60s", "--checkpoint-margin", "90"], "must be below --time-limit"),
    (["--time-limit", "60s", "--claim-fraction", "1.5"], "--claim-fraction"),
])
def test_bad_time_limit_options_are_one_error_line(sqlite_url, args, message):
    done = subprocess.run([HAARES, "worker", "--gpu", "cpu", "--db", sqlite_url, *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr and len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert not os.path.exists(sqlite_url.removeprefix("sqlite:///"))  # nothing created
