"""Checks results/load.py against databases built row by row: grid labels, config fields and eval
points come back as tidy frames, a job shared by two grids carries each grid's labels, and the
newest job per label wins.
"""

from __future__ import annotations

import math

from fixtures.report_db import add_run, build_grid_db

from haares.grids import GRIDS
from haares.jobs.db import make_engine
from haares.results import frames, load


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
