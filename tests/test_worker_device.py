"""Checks that a worker never trains on a device other than the one it promised: `--gpu N` for a GPU this
host does not have is refused before anything is claimed (a real `haares worker` process; this CPU-only
machine has no GPU 0 or 7), and a child that cannot see its worker's GPU fails the attempt, trains
nothing, and stops its worker from claiming more (real child processes; only the parent's start-up
probe is faked, so that it claims at all).
"""

from __future__ import annotations

import subprocess

import pytest
from fixtures.workers import HAARES, rows, tiny_runs

from haares import worker as worker_mod
from haares import worker_options
from haares.jobs.db import make_engine
from haares.jobs.enqueue import enqueue_runs


def _enqueue(db_url: str, n: int = 1):  # noqa: ANN202
    engine = make_engine(db_url)
    enqueue_runs(engine=engine, grid="smoke", runs=tiny_runs(**{"train.steps": 4, "train.eval_every": 2})[:n])
    return engine


def test_the_probe_sees_no_gpu_on_this_machine():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert worker_mod.visible_gpu_count() == 0


@pytest.mark.parametrize("gpu", ["7", "0"])
def test_a_worker_refuses_a_gpu_the_host_lacks(sqlite_url, home, gpu):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    engine = _enqueue(sqlite_url)
    result = subprocess.run([HAARES, "worker", "--gpu", gpu, "--once", "--db", sqlite_url],
                            capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: --gpu {gpu}: this host has no GPU") and "Traceback" not in result.stderr
    assert rows(engine, "SELECT status FROM jobs") == [("queued",)]
    assert rows(engine, "SELECT count(*) FROM attempts") == [(0,)]


def test_a_child_without_its_gpu_fails_the_attempt_and_trains_nothing(sqlite_url, home, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    engine = _enqueue(sqlite_url, n=2)
    monkeypatch.setattr(worker_options, "visible_gpu_count", lambda: 8)  # the parent believes in GPU 7
    options = worker_mod.WorkerOptions(gpu="7", slots=1, heartbeat_s=0.5, lease_ttl_s=5, poll_s=0.5)
    summary = worker_mod.run_worker(db_url=sqlite_url, options=options)
    assert summary.claimed == 1 and summary.stopped_by == "device mismatch"
    attempts = rows(engine, "SELECT outcome, exit_code, error, device_name, gpu FROM attempts")
    assert len(attempts) == 1
    outcome, code, error, device, gpu = attempts[0]
    assert (outcome, code, gpu) == ("failed", 69, "7") and device is None
    assert "promised GPU 7" in error and "not training on the CPU" in error
    assert sorted(rows(engine, "SELECT status, step FROM jobs")) == [("queued", 0), ("queued", 0)]
    run_keys = [k for (k,) in rows(engine, "SELECT run_key FROM jobs")]
    assert run_keys and not any((home / "runs" / k / "checkpoints").exists() for k in run_keys)
    assert not any((home / "runs" / k / "evals.jsonl").exists() for k in run_keys)
