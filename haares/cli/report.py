"""`haares report`: rebuild one of the paper's tables (3 to 12) from the database. Never imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from haares.cli.options import DbOption, FormatOption, GridOption


def register(app: typer.Typer) -> None:
    """Add the `report` command to `app`."""
    app.command("report")(report)


def report(
    table: Annotated[
        Optional[int],
        typer.Option("--table", "-t", help="Paper table number, 3 to 12 (10 is analytic); leave out with --grid for that grid's own report."),
    ] = None,
    grid: GridOption = None,
    fmt: FormatOption = "table",
    with_paper: Annotated[bool, typer.Option("--paper", help="Show the paper's stated numbers beside the measured ones.")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Also write training curves (val loss vs step) to this PNG.")] = None,
    db: DbOption = None,
) -> None:
    """Rebuild the paper's table N, or a grid's own report, from the runs in the database (see docs/reports.md)."""
    from haares.results.cli_entry import run_report

    run_report(table=table, grid_name=grid, fmt=fmt, with_paper=with_paper, plot=plot, db=db)
