"""Options shared by several commands, defined once (sqlite-utils' output_options idea), and `database`,
the one way a command opens the queue database named by `--db`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine

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


@contextmanager
def database(db: str | None, *, read_only: bool = False, create: bool = True) -> Iterator[Engine]:
    """The queue database of `--db` (or HAARES_DB, or the default under HAARES_HOME), opened for one command.

    read_only=True never creates or writes anything; create=False refuses a database that does not exist.
    """
    from haares.jobs.engine import open_engine
    from haares.settings import resolve_db_url

    with open_engine(resolve_db_url(db), read_only=read_only, create=create) as engine:
        yield engine
