"""Checks a new database over a results home that already holds finished runs (moving from SQLite to
PostgreSQL, say): the job of a run whose folder holds the finished run of the same key succeeds with
that run's evaluations recorded, identical to the first database's, never empty. Real worker processes.
"""

from __future__ import annotations

import subprocess

import pytest
from fixtures.workers import HAARES, rows, tiny_runs

from haares.jobs.db import make_engine
from haares.jobs.enqueue import enqueue_runs


def _drain(url: str, spec) -> list:  # noqa: ANN001
    engine = make_engine(url)
    enqueue_runs(engine=engine, grid="smoke", runs=[spec])
    result = subprocess.run([HAARES, "worker", "--gpu", "cpu", "--once", "--db", url], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = {
        "job": rows(engine, "SELECT status, step, best_val_loss, last_val_loss FROM jobs"),
        "evals": rows(engine, "SELECT step, val_loss, tokens FROM evals ORDER BY step"),
    }
    engine.dispose()
    return out


@pytest.mark.slow
def test_a_new_database_records_the_finished_run_it_finds(db_url, home, tmp_path):
    spec = tiny_runs(**{"train.steps": 6, "train.eval_every": 3})[0]
    first = _drain(f"sqlite:///{tmp_path / 'first.db'}", spec)
    assert first["job"][0][0] == "succeeded" and [s for s, _, _ in first["evals"]] == [3, 6]
    second = _drain(db_url, spec)
    assert second["job"] == first["job"]
    assert second["evals"] == first["evals"]
