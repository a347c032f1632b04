"""Checks results/load.py against databases built row by row: grid labels, config fields and eval
points come back as tidy frames, a job shared by two grids carries each grid's labels, and the
newest job per label wins. Also holds `build_grid_db`, the helper the other test_report files use.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

from sqlalchemy import Engine, insert

from haares.grids import GRIDS, expand
from haares.jobs.db import make_engine
from haares.jobs.schema import Eval, GridRun, Job
from haares.results import frames, load

Label = tuple[str, str, int]  # (cell, method, seed)


def add_run(
    engine: Engine,
    *,
    grid: str,
    cell: str,
    method: str,
    seed: int,
    config_json: str,
    run_key: str,
    status: str = "succeeded",
    step: int | None = None,
    evals: Iterable[tuple[int, float]] = (),
    steps_per_s: float | None = 2.0,
    tokens_per_s: float | None = None,
    peak_mem_bytes: int | None = None,
    device: str | None = "cpu",
    attempts: int = 1,
    extra_grids: Iterable[tuple[str, str, str, int]] = (),
    batch_order_hash: str | None = None,
) -> int:
    """Insert one job, its grid label(s) and its (step, val_loss) evals; returns the job id."""
    points = list(evals)
    with engine.begin() as conn:
        job_id = conn.execute(
            insert(Job).values(
                run_key=run_key, method=method, seed=seed, config_json=config_json, status=status,
                step=step if step is not None else (points[-1][0] if points else 0), total_steps=0, attempts=attempts,
                result_json=json.dumps({"batch_order_hash": batch_order_hash}) if batch_order_hash else None,
            )
        ).inserted_primary_key[0]
        for g, c, m, s in [(grid, cell, method, seed), *extra_grids]:
            conn.execute(insert(GridRun).values(grid=g, job_id=job_id, cell=c, method=m, seed=s, pair_index=0, method_index=0))
        for k, loss in points:
            conn.execute(
                insert(Eval).values(
                    job_id=job_id, attempt_no=1, step=k, tokens=k * 100, train_seconds=k / (steps_per_s or 1.0),
                    val_loss=loss, steps_per_s=steps_per_s, tokens_per_s=tokens_per_s, peak_mem_bytes=peak_mem_bytes,
                    device=device,
                )
            )
    return int(job_id)


def build_grid_db(
    url: str,
    grid_name: str,
    results: Mapping[Label, Mapping],
    *,
    overrides: Mapping | None = None,
) -> Engine:
    """A database holding the runs of `grid_name` named in `results`, configs from the grid itself.

    results[(cell, method, seed)] = keyword arguments of add_run (status, evals, steps_per_s, ...).
    """
    engine = make_engine(url)
    specs = {(s.cell, s.method, s.seed): s for s in expand(GRIDS[grid_name], overrides=dict(overrides or {}))}
    for label, kwargs in results.items():
        spec = specs[label]
        add_run(engine, grid=grid_name, cell=spec.cell, method=spec.method, seed=spec.seed,
                config_json=spec.config.to_json(), run_key=spec.run_key, **kwargs)
    return engine


def test_load_runs_gives_labels_and_config_fields(sqlite_url):
    engine = build_grid_db(sqlite_url, "smoke", {
        ("", "haares", 42): {"evals": [(50, 2.5), (100, 2.1)]},
        ("", "standard", 123): {"status": "queued", "evals": []},
    })
    runs = load.load_runs(engine, "smoke")
    assert sorted(runs["method"]) == ["haares", "standard"]
    row = runs[runs["method"] == "haares"].iloc[0]
    assert row["seed"] == 42 and row["status"] == "succeeded"
    assert row["budget_steps"] == 200 and row["eval_every"] == 50
    assert row["eval_tokens"] == 16 * 8 * 128 and row["precision"] == "fp32"
    assert row["d_model"] == 64 and row["n_layers"] == 4 and row["blocks"] == 2 and row["residual"] == "haares"
    assert load.count_runs(engine, "smoke") == 2 and load.count_runs(engine, "main48") == 0


def test_load_evals_is_tidy_and_ordered(sqlite_url):
    engine = build_grid_db(sqlite_url, "smoke", {("", "haares", 42): {"evals": [(100, 2.1), (50, 2.5)]}})
    evals = load.load_evals(engine, "smoke")
    assert list(evals["step"]) == [50, 100]
    assert list(evals["val_loss"]) == [2.5, 2.1]
    assert set(evals.columns) >= {"grid", "method", "seed", "run_key", "step", "tokens", "train_seconds", "val_loss"}
    assert math.isclose(evals["train_seconds"].iloc[0], 25.0)


def test_a_job_in_two_grids_carries_each_grids_labels(sqlite_url):
    engine = make_engine(sqlite_url)
    add_run(engine, grid="main48", cell="", method="haares", seed=42, config_json="{}", run_key="k1",
            evals=[(2000, 1.9)], extra_grids=[("depth", "48L", "haares", 42)])
    main, depth = load.load_runs(engine, "main48"), load.load_runs(engine, "depth")
    assert list(main["cell"]) == [""] and list(depth["cell"]) == ["48L"]
    assert list(load.load_evals(engine, "depth")["cell"]) == ["48L"]
    assert load.load_runs(engine, "main48")["budget_steps"].isna().all()  # empty config: fields are missing


def test_newest_job_per_label_is_kept(sqlite_url):
    engine = make_engine(sqlite_url)
    old = add_run(engine, grid="smoke", cell="", method="haares", seed=42, config_json="{}", run_key="old", evals=[(50, 3.0)])
    new = add_run(engine, grid="smoke", cell="", method="haares", seed=42, config_json="{}", run_key="new", evals=[(50, 2.0)])
    kept, left_out = frames.latest_runs(load.load_runs(engine, "smoke"))
    assert list(kept["job_id"]) == [new] and old != new and left_out == 1
    # The same choice made in SQL, for runs and for evals.
    assert list(load.load_runs(engine, "smoke", newest=True)["job_id"]) == [new]
    evals = load.load_evals(engine, "smoke", newest=True)
    assert list(evals["job_id"]) == [new] and list(evals["val_loss"]) == [2.0]
    assert len(load.load_evals(engine, "smoke")) == 2


def test_report_reads_both_backends(db_url):
    """The same queries on SQLite and PostgreSQL (the `newest` subquery, the joins, the types)."""
    from haares.results import reports

    engine = build_grid_db(db_url, "smoke", {
        ("", "block_attnres", 42): {"evals": [(50, 2.4), (100, 2.2)]},
        ("", "haares", 42): {"evals": [(50, 2.3), (100, 2.1)]},
    })
    summary, evals, caption = reports.load_grid(engine, GRIDS["smoke"])
    best = summary.set_index("method")["best"]
    assert best["haares"] == 2.1 and best["block_attnres"] == 2.2
    assert len(evals) == 4 and evals["val_loss"].dtype == "float64"
    assert caption[0].startswith("eval: first 16,384 validation tokens, every 50 steps; precision fp32")
    engine.dispose()
