"""Checks a new database over a results home that already holds finished runs (moving from SQLite to
PostgreSQL, say): the job of a run whose folder holds the finished run of the same key succeeds with
that run's evaluations recorded, identical to the first database's, never empty. Real worker processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from fixtures.workers import HAARES, rows, tiny_runs

from haares.jobs.db import make_engine
from haares.jobs.enqueue import enqueue_runs


def _drain(url: str, spec, home) -> list:  # noqa: ANN001
    engine = make_engine(url)
    enqueue_runs(engine=engine, grid="smoke", runs=[spec])
    result = subprocess.run([HAARES, "worker", "--gpu", "cpu", "--once", "--db", url], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "HAARES_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    out = {
        "job": rows(engine, "SELECT status, step, best_val_loss, last_val_loss FROM jobs"),
        "evals": rows(engine, "SELECT step, val_loss, tokens FROM evals ORDER BY step"),
    }
    engine.dispose()
    return out


SPEC_OVERRIDES = {"train.steps": 6, "train.eval_every": 3}


@pytest.fixture(scope="module")
def finished_home(tmp_path_factory):
    """A results home holding one finished run, trained by a worker over a first SQLite database (done
    once: each test gets a copy of the home, so what its own worker writes there stays its own)."""
    root = tmp_path_factory.mktemp("finished")
    first = _drain(f"sqlite:///{root / 'first.db'}", tiny_runs(**SPEC_OVERRIDES)[0], root / "home")
    return root / "home", first


@pytest.mark.slow
def test_a_new_database_records_the_finished_run_it_finds(db_url, home, finished_home):
    template, first = finished_home
    spec = tiny_runs(**SPEC_OVERRIDES)[0]
    assert first["job"][0][0] == "succeeded" and [s for s, _, _ in first["evals"]] == [3, 6]
    shutil.copytree(template, home)
    second = _drain(db_url, spec, home)
    assert second["job"] == first["job"]
    assert second["evals"] == first["evals"]
