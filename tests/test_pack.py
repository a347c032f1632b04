"""`haares pack` / `haares unpack`: a queue carried between two short allocations, with real processes.

The round trip: three tiny smoke runs (seed 42) drained by a worker that the end of its allocation
(SIGUSR1, Slurm's warning; the --time-limit path is test_timelimit.py's) preempts mid-run, once every
run has evaluated; `pack` (no checkpoints) in the first HAARES_HOME, `unpack` into a fresh one; a second
worker finishes them, each starting over from step 0 (the checkpoint did not travel: its log and the
attempt row say so) with the same losses at the steps both attempts evaluated; `report` and `logs` work
there. Plus the refusals: an existing database, a foreign archive, a PostgreSQL URL. Only the workers
are processes of their own; the other commands run in-process through the entry point (`cli`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tarfile
from types import SimpleNamespace

import pytest
from fixtures.workers import HAARES, rows, tiny_runs, wait_for

from haares.jobs import enqueue_runs, make_engine

# Every run is stopped after its first evaluation (step 40), some 160 steps before it could finish.
STEPS, EVERY = 200, 40
FAST = ("--gpu", "cpu", "--heartbeat", "0.3", "--lease-ttl", "3", "--poll", "0.3")


@pytest.fixture
def haares(cli, monkeypatch):
    """`haares ARGS` in-process with HAARES_HOME=home (and no HAARES_DB); returncode, stdout, stderr."""

    def run(home, *args: str, check: bool = True) -> SimpleNamespace:  # noqa: ANN001
        monkeypatch.setenv("HAARES_HOME", str(home))
        monkeypatch.delenv("HAARES_DB", raising=False)
        code, out, err = cli(*args)
        if check:
            assert code == 0, out[-2000:] + err[-3000:]
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run


def _worker(home, *args: str, log) -> subprocess.Popen:  # noqa: ANN001
    """`haares worker ARGS` as a real process in HAARES_HOME=home, on that home's default database."""
    env = {**os.environ, "HAARES_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("HAARES_DB", None)
    with open(log, "wb") as out:
        return subprocess.Popen([HAARES, "worker", *args], stdout=out, stderr=subprocess.STDOUT, env=env)


def _engine(home):  # noqa: ANN001, ANN202
    return make_engine(f"sqlite:///{home / 'haares.db'}")


@pytest.mark.slow
def test_preempted_queue_travels_without_checkpoints_and_finishes_in_a_fresh_home(tmp_path, haares):
    first, second = tmp_path / "alloc1", tmp_path / "alloc2"
    engine = _engine(first)
    enqueue_runs(engine=engine, grid="smoke", runs=tiny_runs(**{"train.steps": STEPS, "train.eval_every": EVERY})[:3])
    worker = _worker(first, *FAST, "--slots", "3", log=tmp_path / "w1.log")
    try:
        wait_for(lambda: rows(engine, "SELECT COUNT(DISTINCT job_id) FROM evals") == [(3,)], timeout=180,
                 what="every run's first evaluation")
    finally:
        worker.send_signal(signal.SIGUSR1)
        worker.wait(timeout=120)
    out = (tmp_path / "w1.log").read_text()
    assert worker.returncode == 0 and "stopped by SIGUSR1; 3 claimed:" in out, out[-3000:]
    states = rows(engine, "SELECT id, status, attempts FROM jobs")
    assert all((s, a) in (("queued", 0), ("succeeded", 1)) for _, s, a in states), states  # no retry spent
    stopped = dict(rows(engine, "SELECT job_id, end_step FROM attempts WHERE outcome = 'preempted'"))
    mid_run = sorted(j for j, step in stopped.items() if 0 < step < STEPS)
    assert mid_run, stopped  # at least one run checkpointed mid-run; its checkpoint will not travel
    evals_before = {(j, s): v for j, s, v in rows(engine, "SELECT job_id, step, val_loss FROM evals")}
    engine.dispose()

    haares(first, "pack", str(tmp_path / "with.tar.gz"), "--with-checkpoints")
    packed = haares(first, "pack", str(tmp_path / "q.tar.gz")).stdout
    assert "3 run folder(s)" in packed and "warning" not in packed
    with tarfile.open(tmp_path / "q.tar.gz") as tar:
        names = tar.getnames()
    with tarfile.open(tmp_path / "with.tar.gz") as tar:
        with_names = tar.getnames()
    assert "haares.db" in names and not any("/checkpoints/" in n for n in names)
    assert any(n.endswith("evals.jsonl") for n in names) and any("/logs/attempt-1.log" in n for n in names)
    assert any(n.endswith(".ckpt") for n in with_names)

    restored = haares(second, "unpack", str(tmp_path / "q.tar.gz")).stdout
    assert f"{len(stopped)} queued" in restored
    assert not list(second.glob("runs/*/checkpoints"))
    worker2 = _worker(second, *FAST, "--slots", "3", log=tmp_path / "w2.log")
    assert worker2.wait(timeout=240) == 0, (tmp_path / "w2.log").read_text()[-3000:]
    out2 = (tmp_path / "w2.log").read_text()
    assert f"{len(stopped)} claimed: {len(stopped)} succeeded" in out2
    assert out2.count("restarting from step 0") == len(mid_run)

    engine = _engine(second)
    assert rows(engine, "SELECT DISTINCT status, attempts FROM jobs") == [("succeeded", 1)]
    restarts = rows(engine, "SELECT job_id, outcome, start_step, end_step FROM attempts WHERE attempt_no = 2")
    assert sorted(restarts) == [(j, "succeeded", 0, STEPS) for j in sorted(stopped)]
    evals_after = {(j, s): v for j, s, v in rows(engine, "SELECT job_id, step, val_loss FROM evals")}
    assert len(evals_after) == 3 * STEPS // EVERY
    assert evals_before and {k: evals_after[k] for k in evals_before} == evals_before  # rerun from 0: the same run
    engine.dispose()

    job = str(mid_run[0])
    assert "starting at step 0 (no checkpoint in" in haares(second, "logs", job, "--attempt", "2").stdout
    assert "preempted at step" in haares(second, "logs", job, "--attempt", "1").stdout  # travelled; path rewritten
    report = haares(second, "report", "--table", "4", "--grid", "smoke", "--format", "md").stdout
    assert "haares" in report.lower() and "standard" in report.lower()


def _one_error(done: SimpleNamespace, text: str) -> None:
    assert done.returncode != 0
    assert done.stderr.startswith("error: ") and text in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_unpack_refuses_an_existing_database_unless_forced(tmp_path, haares):
    home = tmp_path / "home"
    engine = _engine(home)
    enqueue_runs(engine=engine, grid="smoke", runs=tiny_runs()[:1])
    engine.dispose()
    haares(home, "pack", str(tmp_path / "q.tar.gz"))
    before = (home / "haares.db").read_bytes()
    _one_error(haares(home, "unpack", str(tmp_path / "q.tar.gz"), check=False), "already exists")
    assert (home / "haares.db").read_bytes() == before
    assert "(1 queued)" in haares(home, "unpack", str(tmp_path / "q.tar.gz"), "--force").stdout


def test_unpack_refuses_what_is_not_a_pack_and_changes_nothing(tmp_path, haares):
    bogus = tmp_path / "bogus.tar.gz"
    with tarfile.open(bogus, "w:gz") as tar:
        tar.add(__file__, arcname="runs/x/evals.jsonl")
    home = tmp_path / "home"
    _one_error(haares(home, "unpack", str(bogus), check=False), "is not a haares pack")
    _one_error(haares(home, "unpack", str(tmp_path / "missing.tar.gz"), check=False), "no pack at")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    _one_error(haares(home, "unpack", str(tmp_path / "junk.tar.gz"), check=False), "cannot read")
    assert not home.exists()


def test_pack_refuses_postgresql_and_a_missing_database(tmp_path, haares):
    home = tmp_path / "home"
    _one_error(haares(home, "pack", "q.tar.gz", "--db", "postgresql://u@h/db", check=False), "SQLite")
    _one_error(haares(home, "pack", str(tmp_path / "q.tar.gz"), check=False), "no queue database")
    assert not (tmp_path / "q.tar.gz").exists()
