"""`open_engine`: the one way a command opens the queue database and closes it again.

The opening rules (URL parsing, SQLite vs PostgreSQL, migrations, read-only) live in jobs/db.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine


@contextmanager
def open_engine(url: str, *, read_only: bool = False, create: bool = True) -> Iterator[Engine]:
    """An engine on `url` (see `make_engine` for `read_only` and `create`), disposed on leaving the block.

    Raises HaaresError (one line) where the database cannot be opened as asked.
    """
    from haares.jobs.db import make_engine

    engine = make_engine(url, read_only=read_only, create=create)
    try:
        yield engine
    finally:
        engine.dispose()
