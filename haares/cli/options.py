"""Options shared by several commands, defined once (sqlite-utils' output_options idea)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

DbOption = Annotated[
    Optional[str],
    typer.Option(
        "--db",
        envvar="HAARES_DB",
        help="Database URL (sqlite:///path.db or postgresql://user@host/db). Default: a SQLite file under HAARES_HOME.",
        show_envvar=True,
    ),
]

GridOption = Annotated[Optional[str], typer.Option("--grid", "-g", help="Grid name (see `haares grids`).")]

FormatOption = Annotated[
    str, typer.Option("--format", "-f", help="Output format: table (rich), md, csv, latex or json.")
]
