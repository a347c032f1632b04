"""Exact resume across processes: a crashed or SIGTERM-stopped run, resumed, equals its uninterrupted twin.

Each twin is compared bitwise on the CPU: every evaluation's val and train loss, the final model
weights and optimizer state (read from the final checkpoints), and evals.jsonl's losses. The
interrupted runs train in real subprocesses (python -c), one killed with SIGKILL right after the
checkpoint of an evaluation, one sent SIGTERM by this test between two evaluations.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures.tiny import tiny_config as shared_tiny_config

from haares.checkpoint import checkpoint_path, list_checkpoints, read_checkpoint
from haares.config import RunConfig
from haares.train import TrainCallbacks, train

STEPS, EVAL_EVERY = 20, 5

CHILD = r"""
import json, os, signal, sys, time
import torch
torch.set_num_threads(1)
from pathlib import Path
from haares.config import RunConfig
from haares import train as t

cfg = RunConfig.from_dict(json.loads(sys.argv[1]))
run_dir, mode, at = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
should_stop = t.install_sigterm_handler()

def on_checkpoint(step, path):
    if mode == "kill" and step == at:
        os.kill(os.getpid(), signal.SIGKILL)  # a crash right after the checkpoint of an evaluation

def on_progress(step, loss, tps):
    print(f"STEP {step}", flush=True)
    if mode == "term" and step == at:
        deadline = time.monotonic() + 60
        while not should_stop() and time.monotonic() < deadline:  # wait for the parent's SIGTERM
            time.sleep(0.01)

callbacks = t.TrainCallbacks(on_checkpoint=on_checkpoint, on_progress=on_progress, progress_interval_s=0)
try:
    result = t.train(cfg, device="cpu", run_dir=run_dir, callbacks=callbacks, should_stop=should_stop)
except t.Preempted as stop:
    print(f"PREEMPTED {stop.step}", flush=True)
    sys.exit(75)
print(f"DONE {result.final_step}", flush=True)
"""


def tiny_config() -> RunConfig:
    return shared_tiny_config(steps=STEPS, eval_every=EVAL_EVERY)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """The uninterrupted run, in this process: its result and run dir."""
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("twin") / "run"
    return train(tiny_config(), device="cpu", run_dir=run_dir), run_dir


def _child(run_dir: Path, mode: str, at: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, tiny_config().to_json(), str(run_dir), mode, str(at)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _assert_identical(twin_result, twin_dir: Path, result, run_dir: Path) -> None:
    assert [(p.step, p.val_loss, p.train_loss) for p in result.evals] == [
        (p.step, p.val_loss, p.train_loss) for p in twin_result.evals
    ]
    assert (result.best_val_loss, result.best_step) == (twin_result.best_val_loss, twin_result.best_step)
    assert result.batch_order_hash == twin_result.batch_order_hash
    mine = read_checkpoint(checkpoint_path(run_dir / "checkpoints", STEPS))
    theirs = read_checkpoint(checkpoint_path(twin_dir / "checkpoints", STEPS))
    assert mine["model"].keys() == theirs["model"].keys()
    for name, tensor in theirs["model"].items():
        assert torch.equal(mine["model"][name], tensor), name
    for index, state in theirs["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(mine["optimizer"]["state"][index][key], value), (index, key)

    def losses(path: Path) -> list[tuple]:
        lines = [json.loads(line) for line in (path / "evals.jsonl").read_text().splitlines()]
        return [(r["step"], r["val_loss"], r["train_loss"]) for r in lines]

    assert losses(run_dir) == losses(twin_dir)


@pytest.mark.slow
def test_crash_after_eval_then_resume_in_a_new_process_is_bitwise_identical(twin, tmp_path):
    twin_result, twin_dir = twin
    run_dir = tmp_path / "run"
    crashed = _child(run_dir, "kill", 10)
    out, err = crashed.communicate(timeout=120)
    assert crashed.returncode == -signal.SIGKILL, err
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [5, 10]

    resumed = _child(run_dir, "none", 0)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    steps = [int(line.split()[1]) for line in out.splitlines() if line.startswith("STEP")]
    assert steps[0] == 11 and steps[-1] == STEPS, "the new process did not continue from step 10"

    # The resumed process wrote the final checkpoint; reading it back through train() is a no-op.
    result = train(tiny_config(), device="cpu", run_dir=run_dir)
    _assert_identical(twin_result, twin_dir, result, run_dir)


@pytest.mark.slow
def test_sigterm_between_evaluations_checkpoints_that_step_and_resumes_identically(twin, tmp_path):
    twin_result, twin_dir = twin
    run_dir = tmp_path / "run"
    child = _child(run_dir, "term", 7)
    deadline = time.monotonic() + 120
    for line in child.stdout:
        if line.strip() == "STEP 7":
            child.send_signal(signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "child never reached step 7"
    out, err = child.communicate(timeout=120)
    assert child.returncode == 75, err
    assert "PREEMPTED 7" in out
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [5, 7]
    assert read_checkpoint(checkpoint_path(run_dir / "checkpoints", 7))["step"] == 7

    progressed: list[int] = []
    callbacks = TrainCallbacks(on_progress=lambda step, loss, tps: progressed.append(step), progress_interval_s=0)
    result = train(tiny_config(), device="cpu", run_dir=run_dir, callbacks=callbacks)
    assert progressed[0] == 8, "the resumed run did not start after the SIGTERM step"
    _assert_identical(twin_result, twin_dir, result, run_dir)
