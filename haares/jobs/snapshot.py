"""A SQLite queue as a file, for `haares pack` / `unpack` (haares.pack): copy it, count its jobs, and the
one rewrite a pack needs (attempts' log paths). sqlite3 on the file directly, no engine: a pack carries
the file, and the copy is taken with sqlite3's online backup API (consistent, a live worker's WAL included).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def backup(src: Path, dst: Path) -> None:
    """Copy database `src` into `dst` with sqlite3's online backup API (consistent, WAL included)."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dst, timeout=30)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def jobs_by_status(db: Path) -> dict[str, int]:
    """{status: number of jobs} of the database file, opened read-only."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())


def rewrite_log_paths(db: Path, old_runs: str, new_runs: Path) -> None:
    """Point the attempts' log paths under `old_runs` at `new_runs` (`haares logs` in the next allocation)."""
    old = old_runs.rstrip("/") + "/"
    new = str(new_runs.resolve()).rstrip("/") + "/"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE attempts SET log_path = ? || substr(log_path, ?) WHERE substr(log_path, 1, ?) = ?",
                     (new, len(old) + 1, len(old), old))
