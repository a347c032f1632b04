"""Which code ran: the git state of the haares checkout. No torch, no database (enqueue and train both use it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from haares import __version__

CHECKOUT = Path(__file__).resolve().parents[1]


def git_state(*pathspec: str) -> tuple[str | None, bool | None]:
    """(HEAD SHA, whether tracked files under `pathspec` (all if none) are edited), or (None, None)
    when the package is not in a git checkout or git is missing. Never raises."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True, timeout=10)

    if not (CHECKOUT / ".git").exists():  # an installed wheel: never report an enclosing repo's state
        return None, None
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None, None
        status = git("status", "--porcelain", "--untracked-files=no", "--", *pathspec)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip())


def code_ref() -> str:
    """The code version stored on each enqueued run: `<sha12>`, `<sha12>-dirty` when files of the
    package are edited, else `v<version>` outside a checkout."""
    sha, dirty = git_state("haares")
    if sha is None:
        return f"v{__version__}"
    return sha[:12] + ("-dirty" if dirty else "")
