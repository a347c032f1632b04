"""`haares report`: rebuild one of the paper's tables (3 to 12) from the database and print it. Never imports torch.

Arguments are checked before the database is opened, so a mistake touches nothing. The tables are
built by haares.results (load -> frames -> reports -> render); this module opens the database, prints
and plots.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from haares.cli.options import DbOption, FormatOption, GridOption, database
from haares.errors import HaaresError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from haares.grids import Grid
    from haares.results.render import Report

PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def report(
    table: Annotated[
        Optional[int],
        typer.Option("--table", "-t", help="Paper table number, 3 to 12 (10 is analytic); leave out with --grid for that grid's own report."),
    ] = None,
    grid: GridOption = None,
    fmt: FormatOption = "table",
    with_paper: Annotated[bool, typer.Option("--paper", help="Show the paper's stated numbers beside the measured ones.")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Also write training curves (val loss vs step) to this PNG.")] = None,
    plot_diff: Annotated[Optional[Path], typer.Option(
        "--plot-diff", help="Also write each method minus the grid's baseline, per seed, over steps (paired "
                            "differences of val loss) to this PNG.")] = None,
    db: DbOption = None,
) -> None:
    """Rebuild the paper's table N, or a grid's own report, from the runs in the database (see docs/reports.md)."""
    from haares.results.render import FORMATS
    from haares.results.reports import build_report, grid_for

    if fmt not in FORMATS:
        raise HaaresError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    spec = grid_for(table, grid)
    plots = {kind: path for kind, path in (("curves", plot), ("differences", plot_diff)) if path is not None}
    for path in plots.values():
        check_plot_path(path, analytic=spec is None)
    if spec is None:  # the analytic Table 10 reads no database
        print_report(build_report(None, table, None, with_paper=with_paper), fmt)
        return
    with database(db, read_only=True) as engine:
        built = build_report(engine, table, spec, with_paper=with_paper)
        print_report(built, fmt)
        for kind, path in plots.items():
            written = write_plot(engine, spec, path, kind=kind, title=f"{built.title}: grid {spec.name}")
            print(f"wrote {written}", file=sys.stderr)


def check_plot_path(path: Path, *, analytic: bool = False) -> None:
    """A plot target must be a file name with an image suffix, in a folder that exists (HaaresError)."""
    if analytic:
        raise HaaresError("table 10 is analytic and has no training curves; drop --plot and --plot-diff")
    if path.is_dir():
        raise HaaresError(f"--plot {path} is a folder; name a file, e.g. --plot {path / 'curves.png'}")
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise HaaresError(f"--plot {path}: the file name must end in {', '.join(PLOT_SUFFIXES)} (the image format)")
    if not path.parent.is_dir():
        raise HaaresError(f"--plot {path}: the folder {path.parent} does not exist")


def write_plot(engine: Engine, spec: Grid, path: Path, *, kind: str, title: str) -> Path:
    """The grid's training curves (kind "curves": val loss vs step) or paired differences (kind
    "differences": each method minus the grid's baseline, per seed), methods x seeds x cells, to `path`."""
    from haares.results import frames
    from haares.results.plot import plot_curves, plot_paired_differences
    from haares.results.reports import load_grid

    summary, evals, _ = load_grid(engine, spec)
    axes = dict(methods=frames.ordered(spec.methods, summary["method"]),
                seeds=frames.ordered(spec.seeds, summary["seed"]), cells=frames.ordered(spec.cells, summary["cell"]))
    if kind == "differences":
        return plot_paired_differences(evals, path, baseline=spec.baseline, **axes,
                                       title=title)
    return plot_curves(evals, path, **axes, title=f"{title}, validation loss")


def print_report(built: Report, fmt: str) -> None:
    """Write the report to stdout: rich tables in colour on a terminal, else the text of `fmt`."""
    from haares.results.render import render, rich_report

    if fmt == "table" and sys.stdout.isatty():
        from rich.console import Console

        Console().print(rich_report(built))
    else:
        sys.stdout.write(render(built, fmt))
