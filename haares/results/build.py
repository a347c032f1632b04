"""Which grid each paper table (3 to 12) reads, and building that table as a Report.

Loads the grid once (load.py), keeps the newest job per label, summarises each run (tables.py)
and hands off to the builder of the table's shape: build_seed (3-9), build_cost (10, 11),
build_ttt (12).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from haares.errors import HaaresError
from haares.grids import Grid, get_grid
from haares.results import tables
from haares.results.build_seed import seed_report
from haares.results.cells import settings_caption
from haares.results.render import Report

if TYPE_CHECKING:
    from sqlalchemy import Engine

TABLE_GRIDS: dict[int, str | None] = {
    3: "depth", 4: "main48", 5: "large453", 6: "bpe48", 7: "blocks", 8: "ablations", 9: "domains",
    10: None, 11: "cost", 12: "main48",
}


def check_table(table: int) -> None:
    """Raise a one-line HaaresError for a table number the paper does not have."""
    if table not in TABLE_GRIDS:
        raise HaaresError(f"unknown table {table}; the paper's tables are 3 to 12 (try `haares report --table 4`)")


def grid_for(table: int | None, grid: str | None) -> Grid | None:
    """The grid a table reads (`grid` overrides the default); None for the analytic Table 10.

    `table` None asks for the grid's own report (seeds x methods), so `grid` is then required.
    """
    if table is None:
        if not grid:
            raise HaaresError("pass --table N (a paper table, 3 to 12) or --grid NAME (that grid's own report)")
        return get_grid(grid)
    check_table(table)
    if table == 10:
        if grid:
            raise HaaresError("table 10 is analytic (source counts, Eq. 14) and reads no runs; drop --grid")
        return None
    return get_grid(grid or TABLE_GRIDS[table])


def load_grid(engine: Engine, grid: Grid) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(run summary, evals, caption lines) of the newest job per label of `grid`."""
    from haares.results import load  # SQLAlchemy and the schema: not needed by the analytic Table 10

    total = load.count_runs(engine, grid.name)
    if total == 0:
        raise HaaresError(f"no runs of grid {grid.name} in DB; enqueue with `haares enqueue --grid {grid.name}`")
    # Only the newest job per label is read (in SQL): older versions of a label cost nothing.
    runs, _ = tables.latest_runs(load.load_runs(engine, grid.name, newest=True))
    evals = load.load_evals(engine, grid.name, newest=True)
    return tables.run_summary(runs, evals), evals, settings_caption(runs, total - len(runs))


def build_report(engine: Engine | None, table: int | None, grid: Grid | None, *, with_paper: bool = False) -> Report:
    """Table `table` rebuilt from the database behind `engine` (neither is used for Table 10)."""
    if table == 10:
        from haares.results.build_cost import table10_report

        return table10_report(with_paper=with_paper)
    assert grid is not None and engine is not None
    summary, evals, caption = load_grid(engine, grid)
    if table == 11:
        from haares.results.build_cost import table11_report

        return table11_report(grid, summary, evals, caption, with_paper=with_paper)
    if table == 12:
        from haares.results.build_ttt import table12_report

        return table12_report(grid, summary, evals, caption, with_paper=with_paper)
    return seed_report(table, grid, summary, caption, with_paper=with_paper)
