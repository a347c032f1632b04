"""`haares worker --gpu cpu --slots 2` drains a small grid with two children at once on one device;
every attempt's recorded device is what its child really used; `haares logs` prints an attempt's log;
bad input to `haares worker` / `haares logs` is a one-line error with a non-zero exit.

The device is checked three ways that do not share code: the attempt row (the child's own report over
the event pipe), the evals rows (train()'s EvalPoint.device) and the header line the child printed
to its log (with its CUDA_VISIBLE_DEVICES, which the worker set to "" for cpu).
"""

from __future__ import annotations

import re
import subprocess

import pytest
from fixtures.workers import HAARES, rows, start_worker, tiny_runs

from haares.jobs.db import make_engine
from haares.jobs.enqueue import enqueue_runs


@pytest.mark.slow
def test_two_slots_run_concurrently_and_record_the_real_device(sqlite_url, tmp_path, home, cli):
    engine = make_engine(sqlite_url)
    # Two runs, both at once (a freed slot taking the next job is test_golf_cli.py's: 8 jobs on 2 slots).
    specs = tiny_runs(**{"train.steps": 20})[:2]
    enqueue_runs(engine=engine, grid="smoke", runs=specs)
    worker = start_worker(sqlite_url, "--gpu", "cpu", "--slots", "2", "--heartbeat", "0.5", "--lease-ttl", "5",
                          log=tmp_path / "w.log", env={"OMP_NUM_THREADS": "1"})
    assert worker.wait(timeout=150) == 0, (tmp_path / "w.log").read_text()[-3000:]

    assert rows(engine, "SELECT status, COUNT(*) FROM jobs GROUP BY status") == [("succeeded", 2)]
    attempts = rows(engine, "SELECT job_id, gpu, device_name, log_path, started_at, ended_at FROM attempts")
    assert len(attempts) == 2
    for job_id, gpu, device_name, log_path, _, _ in attempts:
        assert gpu == "cpu"
        header = re.search(r"haares\.child job=(\d+) attempt=1 device=(.+) CUDA_VISIBLE_DEVICES='(.*)' pid=(\d+)",
                           open(log_path).read())
        assert header, log_path
        assert int(header.group(1)) == job_id
        assert header.group(2) == device_name == "cpu"
        assert header.group(3) == ""
        # train() describes the device in more words ('cpu (x86_64, 1 threads)'; the GPU name without UUID).
        model = device_name.split(" GPU-")[0]
        eval_devices = {d for (d,) in rows(engine, "SELECT device FROM evals WHERE job_id = :j", j=job_id)}
        assert len(eval_devices) == 1 and eval_devices.pop().startswith(model)
    # Two slots were really used: some pair of attempts overlapped in time.
    spans = sorted((a[4], a[5]) for a in attempts)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))

    job_id = attempts[0][0]
    code, shown, err = cli("logs", str(job_id), "--db", sqlite_url)
    assert code == 0, err
    assert f"haares.child job={job_id} attempt=1" in shown
    # A process of its own, so that a --follow that never returned would fail on the timeout, not hang.
    followed = subprocess.run([HAARES, "logs", str(job_id), "--follow", "--db", sqlite_url], capture_output=True,
                              text=True, timeout=30)
    assert followed.stdout == shown  # the attempt has ended, so --follow returns at once
    engine.dispose()


@pytest.mark.parametrize(
    "args, message",
    [
        (["worker", "--gpu", "banana"], "--gpu must be 'cpu' or GPU indices"),
        (["worker", "--gpu", "cpu", "--db", "postgresql://postgres@127.0.0.1:1/nope"], "cannot connect"),
        (["worker", "--gpu", "cpu", "--slots", "0"], "--slots must be at least 1"),
        (["worker", "--gpu", "cpu", "--heartbeat", "3", "--lease-ttl", "5"], "at least twice --heartbeat"),
        (["worker", "--gpu", "cpu", "--heartbeat", "10", "--lease-ttl", "5"], "--lease-ttl"),
        (["worker", "--gpu", "cpu", "--db", "mysql://x/y"], "error:"),
        (["logs", "4242"], "no job 4242"),
    ],
)
def test_bad_input_is_one_line_error(args, message, sqlite_url, home):
    if "--db" not in args:
        args = [*args, "--db", sqlite_url]
    if args[0] == "logs":
        make_engine(sqlite_url).dispose()  # reading commands refuse a missing database before looking for jobs
    proc = subprocess.run([HAARES, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert message in lines[0]
