"""The code version stored on each enqueued run: the git SHA of the haares checkout, else the package version."""

from __future__ import annotations

import subprocess
from pathlib import Path

from haares import __version__


def code_ref() -> str:
    """`<sha12>` or `<sha12>-dirty` when the package lives in a git checkout (tracked files edited), else
    `v<version>`. Never raises: a missing git or a non-checkout falls back to the version."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return f"v{__version__}"
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "haares").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"v{__version__}"
    return head.stdout.strip()[:12] + ("-dirty" if dirty else "")
