"""Checks that every table that reads runs (3-9, 11, 12) and `--plot` report a grid mid-campaign: some
runs finished (with a result), some running, some still queued, on SQLite and PostgreSQL. Under
pandas 3 the NULL result of an unfinished job arrives as NaN beside finished jobs' JSON strings.
"""

from __future__ import annotations

import pytest
from fixtures.report_db import build_grid_db

from haares.grids import GRIDS, expand
from haares.results import reports

TABLES = [t for t, grid in reports.TABLE_GRIDS.items() if grid is not None]


def partial_results(grid_name: str) -> dict:
    """The first pair finished (evals, a batch-order hash), one run of the next pair running, one queued."""
    runs = expand(GRIDS[grid_name])
    first = [r for r in runs if r.pair_index == runs[0].pair_index]
    later = [r for r in runs if r.pair_index != runs[0].pair_index][:2]
    assert first and len(later) == 2, "the grid needs two pairs for a partial campaign"
    results = {}
    for i, r in enumerate(first):
        results[(r.cell, r.method, r.seed)] = {
            "evals": [(50, 2.5 - 0.01 * i), (100, 2.2 - 0.01 * i)], "batch_order_hash": "abc",
            "tokens_per_s": 1000.0, "peak_mem_bytes": 10**9,
        }
    results[(later[0].cell, later[0].method, later[0].seed)] = {"status": "running", "evals": [(50, 2.6)]}
    results[(later[1].cell, later[1].method, later[1].seed)] = {"status": "queued", "evals": []}
    return results


def test_every_table_that_reads_runs_is_listed():
    assert sorted(TABLES) == [3, 4, 5, 6, 7, 8, 9, 11, 12]


@pytest.mark.parametrize("table", TABLES)
def test_every_table_reports_a_partial_grid(cli, db_url, table):
    grid = reports.TABLE_GRIDS[table]
    build_grid_db(db_url, grid, partial_results(grid)).dispose()
    for fmt in ("table", "json"):
        code, out, err = cli("report", "--table", str(table), "--format", fmt, "--db", db_url)
        assert code == 0, err
        assert f"Table {table}" in out and "Traceback" not in err


def test_plot_of_a_partial_grid(cli, db_url, tmp_path):
    build_grid_db(db_url, "smoke", partial_results("smoke")).dispose()
    target = tmp_path / "curves.png"
    code, _, err = cli("report", "--table", "4", "--grid", "smoke", "--plot", str(target),
                          "--db", db_url)
    assert code == 0, err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_finished_grid_enqueued_again_with_other_steps(cli, db_url):
    """The newest job per label (queued, no result) hides the finished one of the same label."""
    finished = {k: v for k, v in partial_results("smoke").items() if v.get("batch_order_hash")}
    build_grid_db(db_url, "smoke", finished).dispose()
    build_grid_db(db_url, "smoke", {k: {"status": "queued", "evals": []} for k in finished},
                  overrides={"train.steps": 10}).dispose()
    code, out, err = cli("report", "--table", "4", "--grid", "smoke", "--db", db_url)
    assert code == 0, err
    assert "queued" in out and "Traceback" not in err
