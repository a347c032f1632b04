"""The body of `haares report`: check the arguments, open the database, build, print, plot.

Arguments are checked before the database is opened, so a mistake touches nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from haares.errors import HaaresError
from haares.results import build, tables
from haares.results.render import FORMATS, print_rich, render

PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def check_plot_path(path: Path) -> None:
    """A plot target must be a file name with an image suffix, in a folder that exists (HaaresError)."""
    if path.is_dir():
        raise HaaresError(f"--plot {path} is a folder; name a file, e.g. --plot {path / 'curves.png'}")
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise HaaresError(f"--plot {path}: the file name must end in {', '.join(PLOT_SUFFIXES)} (the image format)")
    if not path.parent.is_dir():
        raise HaaresError(f"--plot {path}: the folder {path.parent} does not exist")


def run_report(
    *, table: int | None, grid_name: str | None, fmt: str = "table", with_paper: bool = False,
    plot: Path | None = None, db: str | None = None,
) -> None:
    """Print table `table` of grid `grid_name` (or the table's own grid; with no table, the grid's own
    report) in `fmt`; optionally plot."""
    if fmt not in FORMATS:
        raise HaaresError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    grid = build.grid_for(table, grid_name)
    if plot is not None and grid is None:
        raise HaaresError("table 10 is analytic and has no training curves; drop --plot")
    if plot is not None:
        check_plot_path(plot)
    engine = None
    if grid is not None:
        from haares.jobs.db import make_engine
        from haares.settings import resolve_db_url

        engine = make_engine(resolve_db_url(db), read_only=True)
    try:
        report = build.build_report(engine, table, grid, with_paper=with_paper)
        if fmt == "table" and sys.stdout.isatty():
            from rich.console import Console

            print_rich(report, Console())
        else:
            sys.stdout.write(render(report, fmt))
        if plot is not None:
            from haares.results.plot import plot_curves

            summary, evals, _ = build.load_grid(engine, grid)
            path = plot_curves(
                evals, plot, methods=tables.ordered(grid.methods, summary["method"]),
                seeds=tables.ordered(grid.seeds, summary["seed"]), cells=tables.ordered(grid.cells, summary["cell"]),
                title=f"{report.title}: grid {grid.name}, validation loss",
            )
            print(f"wrote {path}", file=sys.stderr)
    finally:
        if engine is not None:
            engine.dispose()
