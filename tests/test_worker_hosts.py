"""Checks the rule for several hosts with a results home each (real worker processes, both backends):
a job preempted on host A records where its checkpoint is; a worker on host B, which cannot read it,
leaves the job to A for the checkpoint grace period, then restarts it and says so in `status` and
`logs`; a worker on B that shares A's results home resumes it at once, where A stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fixtures.workers import HAARES, rows, start_worker, tiny_runs, wait_for

from haares.jobs.db import db_now, make_engine
from haares.jobs.enqueue import enqueue_runs
from haares.jobs.schema import Job

FAST = ("--gpu", "cpu", "--heartbeat", "0.3", "--lease-ttl", "3", "--poll", "0.5")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def host_env(home, host: str) -> dict:  # noqa: ANN001
    return {**os.environ, **ONE_THREAD, "HAARES_HOME": str(home), "HAARES_HOST": host}


def preempted_on_host_a(db_url: str, tmp_path):  # noqa: ANN001, ANN201
    """Enqueue one run, let a worker on host-a checkpoint it, SIGTERM that worker; returns (engine, step)."""
    engine = make_engine(db_url)
    # 200 steps: the worker is stopped at its checkpoint of step 20, long before the run could end.
    enqueue_runs(engine=engine, grid="smoke", runs=[tiny_runs(**{"train.steps": 200, "train.eval_every": 10})[0]])
    worker = start_worker(db_url, *FAST, log=tmp_path / "a.log", env=host_env(tmp_path / "a", "host-a"))
    try:
        wait_for(lambda: (rows(engine, "SELECT ckpt_step FROM jobs")[0][0] or 0) >= 20, timeout=240,
                 what="a checkpoint recorded by host-a")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=120)
    ((status, host, ckpt_dir, step),) = rows(engine, "SELECT status, ckpt_host, ckpt_dir, ckpt_step FROM jobs")
    assert (status, host) == ("queued", "host-a") and step >= 20
    assert ckpt_dir == str(tmp_path / "a" / "runs" / rows(engine, "SELECT run_key FROM jobs")[0][0])
    assert rows(engine, "SELECT host, ckpt_step FROM attempts") == [("host-a", step)]
    return engine, step


def worker_once(db_url: str, home, host: str, *args: str) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([HAARES, "worker", *FAST, "--once", *args, "--db", db_url], capture_output=True,
                          text=True, env=host_env(home, host), timeout=300)


def waited_since_preemption(engine, seconds: float) -> bool:  # noqa: ANN001
    """Whether the preempted job has been back in the queue for `seconds` (database clock), as the
    claim's checkpoint grace measures it."""
    with engine.connect() as conn:
        cutoff = db_now(conn) - timedelta(seconds=seconds)
        return conn.execute(sa.select(Job.id).where(Job.not_before <= cutoff)).first() is not None


@pytest.mark.slow
def test_a_host_without_the_checkpoint_waits_then_restarts_and_says_so(db_url, tmp_path, cli, monkeypatch):
    engine, step = preempted_on_host_a(db_url, tmp_path)
    waiting = worker_once(db_url, tmp_path / "b", "host-b", "--checkpoint-grace", "600")
    assert waiting.returncode == 0 and "0 claimed" in waiting.stdout, waiting.stdout + waiting.stderr
    assert rows(engine, "SELECT count(*) FROM attempts") == [(1,)]

    wait_for(lambda: waited_since_preemption(engine, 1.2), timeout=30, what="a 1 s grace to pass")
    restarted = worker_once(db_url, tmp_path / "b", "host-b", "--checkpoint-grace", "1")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    ((status, note),) = rows(engine, "SELECT status, note FROM jobs")
    assert status == "succeeded"
    assert f"checkpoint at step {step} is on host host-a" in note and "restarted from step 0" in note
    assert rows(engine, "SELECT host, start_step FROM attempts WHERE attempt_no = 2") == [("host-b", 0)]
    monkeypatch.setenv("HAARES_HOME", str(tmp_path / "b"))
    monkeypatch.setenv("HAARES_HOST", "host-b")
    code, out, err = cli("status", "--db", db_url)
    assert code == 0 and "restarted from step 0" in out.replace("\n", " "), err
    code, out, err = cli("logs", "1", "--attempt", "2", "--db", db_url)
    assert code == 0 and out.startswith(f"haares.worker: the checkpoint at step {step} is on host host-a"), err


@pytest.mark.slow
def test_a_host_sharing_the_results_home_resumes_at_once(db_url, tmp_path):
    engine, step = preempted_on_host_a(db_url, tmp_path)
    resumed = worker_once(db_url, tmp_path / "a", "host-b", "--checkpoint-grace", "600")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert rows(engine, "SELECT status, note FROM jobs") == [("succeeded", None)]
    ((start,),) = rows(engine, "SELECT start_step FROM attempts WHERE attempt_no = 2")
    assert start >= step > 0
