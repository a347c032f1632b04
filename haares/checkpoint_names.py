"""Checkpoint file names, `step_<step, 8+ digits>.ckpt` in a run's `checkpoints/` folder, read without torch.

haares.checkpoint writes and loads the files (and imports torch); the worker and the time limit only need
to know which steps a folder holds, so the naming rule lives here, once.
"""

from __future__ import annotations

import re
from pathlib import Path

_NAME = re.compile(r"^step_(\d{8,})\.ckpt$")


def checkpoint_path(ckpt_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` (optimizer steps completed) lives."""
    return Path(ckpt_dir) / f"step_{step:08d}.ckpt"


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint-named file in `ckpt_dir`, oldest first; temp files excluded."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for path in ckpt_dir.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def newest_step(run_dir: Path) -> int:
    """Step of the newest checkpoint file in run_dir/checkpoints on this host (0 if none or unreadable)."""
    try:
        found = list_checkpoints(Path(run_dir) / "checkpoints")
    except OSError:
        return 0
    return found[-1][0] if found else 0
