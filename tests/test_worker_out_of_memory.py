"""A CUDA out-of-memory beside other runs of the worker (--slots) goes back to the queue without using
a retry, and the worker then runs one fewer at once; alone on the GPU it is a terminal failure.

The children are the test suite's `sleep` kind (fixtures/sleep_kind.py) ending with the training
child's out-of-memory exit code, so the real worker, outcome policy and queue decide, with no GPU.
"""

from __future__ import annotations

import pytest
from fixtures.sleep_kind import enqueue_sleep
from fixtures.workers import rows, start_worker

from haares.jobs.db import make_engine
from haares.outcome import slots_after_out_of_memory
from haares.protocol import EXIT_OUT_OF_MEMORY


def _drain(sqlite_url: str, log, slots: int) -> str:  # noqa: ANN001
    worker = start_worker(sqlite_url, "--gpu", "cpu", "--slots", str(slots), "--heartbeat", "0.5",
                          "--lease-ttl", "10", log=log)
    assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]
    return log.read_text()


@pytest.mark.slow
def test_out_of_memory_beside_others_is_requeued_without_a_retry_and_lowers_the_slots(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    (oom,) = enqueue_sleep(engine=engine, count=1, seconds=0.5, later_seconds=0, first_exit=EXIT_OUT_OF_MEMORY,
                           tag="oom", priority=1).job_ids
    others = enqueue_sleep(engine=engine, count=2, seconds=3, tag="beside").job_ids
    assert len(others) == 2
    shown = _drain(sqlite_url, tmp_path / "w.log", slots=3)

    assert rows(engine, "SELECT status, COUNT(*) FROM jobs GROUP BY status") == [("succeeded", 3)]
    attempts = rows(engine, "SELECT outcome, error FROM attempts WHERE job_id = :j ORDER BY attempt_no", j=oom)
    assert [a[0] for a in attempts] == ["preempted", "succeeded"]
    assert "CUDA out of memory" in attempts[0][1] and "beside 2 other run(s)" in attempts[0][1]
    # The retry budget is untouched: the claim that failed is not counted.
    assert rows(engine, "SELECT attempts FROM jobs WHERE id = :j", j=oom) == [(1,)]
    assert "this worker now runs at most 2 at once" in shown
    engine.dispose()


@pytest.mark.slow
def test_out_of_memory_alone_on_the_gpu_fails_without_a_retry(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    (oom,) = enqueue_sleep(engine=engine, count=1, seconds=0, first_exit=EXIT_OUT_OF_MEMORY, tag="oom").job_ids
    shown = _drain(sqlite_url, tmp_path / "w.log", slots=2)

    ((status, error),) = rows(engine, "SELECT status, error_summary FROM jobs WHERE id = :j", j=oom)
    assert status == "failed"
    assert "alone on the GPU" in error
    assert rows(engine, "SELECT COUNT(*) FROM attempts WHERE job_id = :j", j=oom) == [(1,)]
    assert "now runs at most" not in shown
    engine.dispose()


@pytest.mark.parametrize(("exit_code", "slots", "shared_with", "expected"), [
    (EXIT_OUT_OF_MEMORY, 4, 3, 3),   # four ran together: the GPU holds three
    (EXIT_OUT_OF_MEMORY, 4, 1, 1),   # two ran together: the GPU holds one
    (EXIT_OUT_OF_MEMORY, 2, 1, 1),
    (EXIT_OUT_OF_MEMORY, 1, 0, 1),   # never below one
    (EXIT_OUT_OF_MEMORY, 3, 0, 3),   # alone on the GPU: terminal, slots unchanged
    (0, 4, 3, 4),                    # any other end leaves the slots as they were
    (None, 4, 3, 4),
])
def test_slots_after_out_of_memory(exit_code, slots, shared_with, expected):
    assert slots_after_out_of_memory(exit_code, slots=slots, shared_with=shared_with) == expected
