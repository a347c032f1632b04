"""Benchmark: `haares report` over a database of 1,000 runs with 15 evaluations each (goal: under 2 s).

Builds a SQLite file with every grid's runs, plus older versions of the `domains` grid (the same
labels under other eval intervals, as repeated enqueues leave them) to reach 1,000 jobs and 15,000
evals, then times the real command in a fresh interpreter (startup included) and prints a
Markdown table for docs/benchmarks.md.

    .venv/bin/python benchmarks/report.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from haares.grids import GRIDS, expand
from haares.jobs.db import make_engine
from haares.jobs.schema import Eval, GridRun, Job

N_RUNS = 1000
N_EVALS = 15


def build_db(url: str) -> tuple[int, int]:
    """Fill `url` with N_RUNS jobs of N_EVALS evals each; returns (jobs, evals)."""
    specs = [s for name in GRIDS if name != "domains" for s in expand(GRIDS[name])]
    version = 0
    while len(specs) < N_RUNS:
        version += 1
        specs += expand(GRIDS["domains"], overrides={"train.eval_every": 1000 + version})
    specs = specs[:N_RUNS]
    rng = random.Random(0)
    jobs, labels, evals = [], [], []
    for job_id, spec in enumerate(specs, start=1):
        jobs.append({"id": job_id, "run_key": f"{spec.run_key}{job_id:04d}"[-32:], "method": spec.method,
                     "seed": spec.seed, "config_json": spec.config.to_json(), "status": "succeeded",
                     "step": spec.config.train.steps, "total_steps": spec.config.train.steps})
        labels.append({"grid": spec.grid, "job_id": job_id, "cell": spec.cell, "method": spec.method, "seed": spec.seed,
                       "pair_index": spec.pair_index, "method_index": spec.method_index})
        every = spec.config.train.steps // N_EVALS
        base = 1.7 + rng.random() * 0.3
        for i in range(1, N_EVALS + 1):
            evals.append({"job_id": job_id, "attempt_no": 1, "step": i * every, "tokens": i * every * 8192,
                          "train_seconds": i * every / 2.0, "val_loss": base + 1.0 / i, "steps_per_s": 2.0 + rng.random() * 0.1,
                          "tokens_per_s": 16_000.0, "peak_mem_bytes": 30 * 10**9, "device": "benchmark"})
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(Job), jobs)
        conn.execute(insert(GridRun), labels)
        conn.execute(insert(Eval), evals)
    engine.dispose()
    return len(jobs), len(evals)


def time_command(args: list[str], repeat: int) -> tuple[float, float]:
    """Best wall time and best CPU time (user + sys, s) of `haares <args>` in a fresh interpreter.

    CPU time is reported too because the 2-core machine is shared: wall time includes waiting for
    a core, CPU time does not.
    """
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "haares.cli.app", *args], check=True, stdout=subprocess.DEVNULL)
        best_wall = min(best_wall, time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best_cpu = min(best_cpu, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return best_wall, best_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        n_jobs, n_evals = build_db(url)
        commands = [
            ["report", "--table", "9", "--db", url],
            ["report", "--table", "9", "--format", "json", "--db", url],
            ["report", "--table", "4", "--db", url],
            ["report", "--table", "12", "--db", url],
            ["report", "--table", "10"],
            ["--version"],
        ]
        load_before = os.getloadavg()[0]
        rows = [(" ".join(c).replace(url, "bench.db"), *time_command(c, opts.repeat)) for c in commands]
    print(f"{n_jobs} runs, {n_evals} evals; {dt.date.today()}, {platform.machine()} {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; best of {opts.repeat} fresh processes; "
          f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    print("| command | wall s | CPU s |\n| --- | ---: | ---: |")
    for label, wall, cpu in rows:
        print(f"| `haares {label}` | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
