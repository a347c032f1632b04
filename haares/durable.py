"""Durable renames on disk: the folder fsync that makes a rename survive a crash. No torch.

Used by the atomic writes of checkpoints (checkpoint.py) and of the token cache (data/cache.py).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename into `path` durable: fsync the folder entry (no-op where folders cannot be opened
    or fsynced, e.g. some network filesystems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
