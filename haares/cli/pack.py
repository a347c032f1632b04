"""`haares pack OUT.tar.gz` and `haares unpack IN.tar.gz`: the queue and run records between allocations.

The work is haares.pack; this module parses options and prints one summary line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from haares.cli.options import DbOption


def pack_command(
    out: Annotated[Path, typer.Argument(help="Archive to write, e.g. queue.tar.gz.")],
    db: DbOption = None,
    with_checkpoints: Annotated[bool, typer.Option(
        "--with-checkpoints", help="Include the runs' checkpoints (large), so interrupted runs resume "
        "instead of starting over.")] = False,
) -> None:
    """Snapshot the SQLite queue and the run folders' evals, summaries and logs into one tar.gz.

    Copy it out before an allocation ends; `haares unpack` restores it in the next one. Checkpoints
    stay behind unless --with-checkpoints: a preempted run then starts again from step 0.
    """
    from haares.pack import pack
    from haares.settings import home, resolve_db_url

    summary = pack(out=out, db_url=resolve_db_url(db), home=home(), with_checkpoints=with_checkpoints)
    typer.echo(summary.line(out))


def unpack_command(
    archive: Annotated[Path, typer.Argument(help="Archive written by `haares pack`.")],
    db: DbOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing queue database.")] = False,
) -> None:
    """Restore a `haares pack` archive into HAARES_HOME (the queue database and the run folders).

    Refuses to replace an existing database unless --force.
    """
    from haares.pack import unpack
    from haares.settings import home, resolve_db_url

    typer.echo(unpack(archive=archive, db_url=resolve_db_url(db), home=home(), force=force).line())
