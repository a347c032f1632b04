"""Where things live: the database URL and the results home, resolved in one place.

Precedence for the database: `--db` flag, then `HAARES_DB`, then a SQLite file in the per-user data dir.
Results (run directories, checkpoints, logs, data caches) live under `HAARES_HOME`, by default
the same per-user data dir; never inside the package.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_data_dir

APP_NAME = "haares"


def host_name() -> str:
    """This host's name in the queue: `HAARES_HOST`, else the hostname (containers may share one)."""
    import socket

    return os.environ.get("HAARES_HOST") or socket.gethostname()


def home() -> Path:
    """The results home: `HAARES_HOME`, else the per-user data dir."""
    raw = os.environ.get("HAARES_HOME")
    return Path(raw).expanduser() if raw else Path(user_data_dir(APP_NAME, appauthor=False))


def runs_dir() -> Path:
    """Run directories: one per run key (checkpoints, eval JSONL, summary, logs)."""
    return home() / "runs"


def data_cache_dir() -> Path:
    """Tokenized caches and tokenizers, shared by every run that uses them."""
    raw = os.environ.get("HAARES_DATA_CACHE")
    return Path(raw).expanduser() if raw else home() / "cache"


def default_db_url() -> str:
    """A SQLite file under the results home."""
    return f"sqlite:///{home() / 'haares.db'}"


def resolve_db_url(flag: str | None = None) -> str:
    """The database URL from the flag, `HAARES_DB`, or the default SQLite file."""
    return flag or os.environ.get("HAARES_DB") or default_db_url()
