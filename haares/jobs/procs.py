"""Is a process still the one that took a lease? pid plus start time, so a reused pid is not mistaken for it."""

from __future__ import annotations

import os


def process_start_time(pid: int) -> float | None:
    """Seconds after boot at which `pid` started (from /proc/<pid>/stat), or None if it is gone or a zombie.

    Where /proc is missing (not Linux) it returns 0.0 for a live pid, so only the pid is compared.
    """
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
        return 0.0 if _kill0(pid) else None
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # exited, not yet (or already) reaped: it runs nothing
        return None
    ticks = int(fields[19])  # field 22 of stat: starttime in clock ticks
    return ticks / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int, start_time: float | None) -> bool:
    """True if `pid` runs and (when `start_time` is given) started at that time."""
    now_start = process_start_time(pid)
    if now_start is None:
        return False
    if start_time is None or now_start == 0.0:
        return True
    return abs(now_start - start_time) < 1e-6


def _kill0(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
