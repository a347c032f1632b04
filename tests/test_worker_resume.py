"""Real `haares worker` processes training tiny runs: SIGKILL reclaim with exact resume, SIGTERM preemption.

SIGKILL: the worker dies mid-run, its child dies with it (PDEATHSIG), a second worker on the same host
reclaims the job at once (dead-pid fast path), resumes from the last checkpoint (attempt 2 starts
past step 0) and finishes; every evaluation loss equals that of an uninterrupted twin trained with
haares.train.train directly, bitwise (CPU, one thread in both); its TensorBoard curves show each step once.
SIGTERM: the child checkpoints at its next step and exits; the attempt is recorded as preempted, the
job goes back to the queue with its retries unused, and the next worker resumes it exactly there.
A terminal failure (train() rejects the config) exits 65 and is recorded failed with its error, not retried.
"""

from __future__ import annotations

import os
import signal

import pytest
from fixtures.tensorboard import read_scalars
from fixtures.workers import rows, start_worker, tiny_runs, wait_for

from haares.jobs.db import make_engine
from haares.jobs.enqueue import enqueue_runs
from haares.jobs.procs import process_start_time

STEPS, EVERY = 120, 10
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FAST = ("--gpu", "cpu", "--heartbeat", "0.3", "--lease-ttl", "3", "--poll", "0.5")


def _enqueue_one(db_url: str):  # noqa: ANN202
    engine = make_engine(db_url)
    spec = tiny_runs(**{"train.steps": STEPS, "train.eval_every": EVERY})[0]
    enqueue_runs(engine=engine, grid="smoke", runs=[spec])
    return engine, spec


def _twin_losses(spec, tmp_path) -> dict[int, float]:  # noqa: ANN001
    """The same run, uninterrupted, in this process with the children's thread count."""
    import torch

    from haares.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(spec.config, device="cpu", run_dir=tmp_path / "twin", resume=False)
    finally:
        torch.set_num_threads(threads)
    return {p.step: p.val_loss for p in result.evals}


def _child_pids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


@pytest.mark.slow
def test_sigkill_worker_job_resumes_elsewhere_with_twin_identical_losses(sqlite_url, tmp_path, home):
    engine, spec = _enqueue_one(sqlite_url)
    first = start_worker(sqlite_url, *FAST, log=tmp_path / "w1.log", env=ONE_THREAD)
    wait_for(lambda: rows(engine, "SELECT 1 FROM evals"), timeout=90, what="the first evaluation")
    # The child reports an evaluation before it writes that step's checkpoint (train.py: a crash in between
    # repeats the eval rather than losing it), so a recorded eval does not mean a checkpoint exists yet: a
    # kill right after it restarts from step 0. Wait for the file that a resume needs.
    ckpt_dir = home / "runs" / _run_key(engine) / "checkpoints"
    wait_for(lambda: list(ckpt_dir.glob("step_*.ckpt")), timeout=30, what="the first checkpoint file")
    children = _child_pids(first.pid)
    assert len(children) == 1
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    # PR_SET_PDEATHSIG: the orphaned child is killed with the worker, so it never races a reclaimer.
    wait_for(lambda: process_start_time(children[0]) is None, timeout=10, what="the child to die with its worker")
    done_before = rows(engine, "SELECT MAX(step) FROM evals")[0][0]
    assert done_before < STEPS
    # Where a resume lands: the newest checkpoint file. The worker may have died before recording it
    # (jobs.ckpt_step lags), or before recording that step's eval; the child's start event says it.
    resumable = max(int(p.stem.removeprefix("step_")) for p in ckpt_dir.glob("step_*.ckpt"))
    assert 0 < resumable < STEPS

    second = start_worker(sqlite_url, *FAST, "--once", log=tmp_path / "w2.log", env=ONE_THREAD)
    assert second.wait(timeout=120) == 0, (tmp_path / "w2.log").read_text()[-3000:]

    assert rows(engine, "SELECT status, attempts FROM jobs") == [("succeeded", 1)]
    attempts = rows(engine, "SELECT attempt_no, outcome, start_step, end_step FROM attempts ORDER BY attempt_no")
    assert [(a[0], a[1]) for a in attempts] == [(1, "lost"), (2, "succeeded")]
    assert attempts[1][2] == resumable  # resumed from the newest checkpoint, not from scratch
    assert attempts[1][3] == STEPS

    evals = dict(rows(engine, "SELECT step, val_loss FROM evals ORDER BY step"))
    twin = _twin_losses(spec, tmp_path)
    assert sorted(evals) == list(range(EVERY, STEPS + 1, EVERY))
    assert evals == twin  # bitwise: the resumed run saw the same batches from the same state
    # The child's TensorBoard curves, under the grid's name: every eval step once, across the reclaim.
    curves = read_scalars(home / "tensorboard" / "smoke" / spec.method / f"seed{spec.seed}")
    assert [step for step, _ in curves["loss/val"]] == sorted(evals)
    engine.dispose()


@pytest.mark.slow
def test_sigterm_preempts_checkpoints_and_next_worker_resumes(sqlite_url, tmp_path, home):
    engine, _ = _enqueue_one(sqlite_url)
    first = start_worker(sqlite_url, *FAST, log=tmp_path / "w1.log", env=ONE_THREAD)
    wait_for(lambda: rows(engine, "SELECT 1 FROM evals"), timeout=90, what="the first evaluation")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0
    log1 = (tmp_path / "w1.log").read_text()
    assert "preempted" in log1 and "stopped by SIGTERM" in log1

    job = rows(engine, "SELECT status, attempts, step FROM jobs")[0]
    assert job[0] == "queued" and job[1] == 0  # handed back; the preemption used no retry
    attempt = rows(engine, "SELECT outcome, exit_code, end_step FROM attempts")[0]
    assert attempt[0] == "preempted" and attempt[1] == 75
    stopped_at = attempt[2]
    assert EVERY <= stopped_at < STEPS
    ckpts = sorted(p.name for p in (home / "runs" / _run_key(engine) / "checkpoints").glob("*.ckpt"))
    assert f"step_{stopped_at:08d}.ckpt" in ckpts  # checkpointed at the step it stopped, not the last eval

    second = start_worker(sqlite_url, *FAST, "--once", log=tmp_path / "w2.log", env=ONE_THREAD)
    assert second.wait(timeout=120) == 0, (tmp_path / "w2.log").read_text()[-3000:]
    assert rows(engine, "SELECT status, attempts FROM jobs") == [("succeeded", 1)]
    attempts = rows(engine, "SELECT attempt_no, outcome, start_step FROM attempts ORDER BY attempt_no")
    assert attempts == [(1, "preempted", 0), (2, "succeeded", stopped_at)]
    assert os.path.exists(rows(engine, "SELECT log_path FROM attempts WHERE attempt_no = 2")[0][0])
    engine.dispose()


def _run_key(engine) -> str:  # noqa: ANN001
    return rows(engine, "SELECT run_key FROM jobs")[0][0]


@pytest.mark.slow
def test_terminal_failure_is_not_retried_and_keeps_its_error(sqlite_url, tmp_path, home):
    """A run that train() rejects (vocab smaller than the tokenizer: HaaresError) exits 65 -> failed, no retry."""
    engine = make_engine(sqlite_url)
    spec = tiny_runs(**{"model.vocab_size": 16})[0]
    enqueue_runs(engine=engine, grid="smoke", runs=[spec])
    worker = start_worker(sqlite_url, *FAST, log=tmp_path / "w.log", env=ONE_THREAD)
    assert worker.wait(timeout=90) == 0, (tmp_path / "w.log").read_text()[-3000:]
    job = rows(engine, "SELECT status, attempts, error_summary FROM jobs")[0]
    assert job[0] == "failed" and job[1] == 1
    assert "vocab_size" in job[2]
    attempt = rows(engine, "SELECT outcome, exit_code, error FROM attempts")
    assert len(attempt) == 1 and attempt[0][:2] == ("failed", 65)
    assert attempt[0][2].startswith("HaaresError:")
    engine.dispose()
