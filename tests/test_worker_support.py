"""Support for the worker tests (no tests here): start `haares worker` processes, read the queue back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

HAARES = str(Path(sys.executable).with_name("haares"))

# Tiny training run (the worker brief's override set), on the smoke grid's data.
TINY = {
    "model.d_model": 32, "model.d_ff": 64, "model.n_layers": 2, "model.n_heads": 2, "model.blocks": 2,
    "data.seq_len": 16, "train.batch_size": 4, "train.steps": 40, "train.eval_every": 10,
    "train.eval_batch_size": 4, "data.eval_tokens": 256,
}


def start_worker(db_url: str, *args: str, log: Path, env: dict | None = None) -> subprocess.Popen:
    """`haares worker --db URL ARGS` as a real process, stdout+stderr to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen([HAARES, "worker", "--db", db_url, *args], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})


def wait_for(predicate, *, timeout: float, what: str, every: float = 0.05):  # noqa: ANN001, ANN201
    """Poll until predicate() is truthy; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def rows(engine: sa.Engine, sql: str, **params: object) -> list:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params).all())


def tiny_runs(grid: str = "smoke", **extra: object) -> list:
    """The smoke grid expanded, with the tiny override set (plus `extra`)."""
    from haares.grids import expand, get_grid

    return expand(get_grid(grid), overrides={**TINY, **extra})
