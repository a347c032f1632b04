"""`haares status`: what runs where, how far, and when it ends; a rich table per grid, or one JSON object."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer

from haares.cli.options import DbOption, GridOption, database

STATE_STYLE = {"queued": "white", "running": "cyan", "succeeded": "green", "failed": "red",
               "cancelled": "magenta", "held": "yellow"}


def snapshot(*, engine: Any, grid: str | None) -> dict[str, Any]:
    """{"grids": {grid: {state: n}}, "jobs": [...]} read through `engine`; reads only (workers and
    enqueue reap expired leases, so status shows a lost job as running until one of them does)."""
    from haares.jobs import job_rows, state_counts

    return {"grids": state_counts(engine=engine, grid=grid), "jobs": job_rows(engine=engine, grid=grid)}


def check_grid(grid: str | None, snap: dict[str, Any]) -> None:
    """A grid that is neither defined nor in the database is a mistake (HaaresError), not an empty table."""
    from haares.grids import GRIDS, get_grid

    if grid is not None and grid not in GRIDS and not snap["jobs"]:
        get_grid(grid)  # raises the one-line "unknown grid" error listing the known grids


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def job_heartbeat_style(job: dict[str, Any]) -> str:
    """heartbeat_style of a job row against its own worker's interval and TTL (the defaults when unrecorded)."""
    from haares.jobs.lease import HEARTBEAT_INTERVAL_S, LEASE_TTL_S

    return heartbeat_style(job["heartbeat_age_s"], interval_s=job.get("heartbeat_s") or HEARTBEAT_INTERVAL_S,
                           ttl_s=job.get("lease_ttl_s") or LEASE_TTL_S)


def heartbeat_style(age_s: float | None, *, interval_s: float, ttl_s: float) -> str:
    """Yellow above 2 x the heartbeat interval, red above the lease TTL."""
    if age_s is None:
        return ""
    return "red" if age_s > ttl_s else "yellow" if age_s > 2 * interval_s else "green"


COLUMNS = ("job", "cell", "method", "seed", "state", "step", "last val", "best val", "tok/s", "ETA", "worker",
           "GPU", "beat")
ALWAYS = {"job", "method", "seed", "state", "step"}
DROP_ORDER = ("worker", "last val", "tok/s", "beat", "cell", "ETA", "GPU", "best val")
"""Columns given up, first to last, until a table fits the terminal (the rest are never cut)."""


def fit_columns(rows: list[tuple], width: int) -> list[int]:
    """Indices of the columns to show: those that hold something, minus DROP_ORDER's first ones until
    the widest cell of each (or its header) plus the gaps fits `width`, so no cell is truncated."""
    keep = [i for i, col in enumerate(COLUMNS) if col in ALWAYS or any(str(r[i]) for r in rows)]

    def needed(cols: list[int]) -> int:
        # Each column also takes two spaces of padding and one of rule; the table's edges take two.
        return sum(max([len(COLUMNS[i])] + [len(str(r[i])) for r in rows]) for i in cols) + 3 * len(cols) + 2

    for col in DROP_ORDER:
        if needed(keep) <= width:
            break
        keep = [i for i in keep if COLUMNS[i] != col]
    return keep


def render(snap: dict[str, Any], *, grid: str | None, width: int = 180) -> Any:
    """A rich renderable: per grid, counts by state and one row per (cell, method, seed) run."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from haares.jobs.views import NO_GRID

    if not snap["jobs"]:
        return Text("no jobs" + (f" in grid {grid}" if grid else "") + "; add some with `haares enqueue --grid NAME`")
    parts: list[Any] = []
    for name, counts in snap["grids"].items():
        rows = []
        for job in snap["jobs"]:
            if not (name in job["grids"] or (name == NO_GRID and not job["grids"])):
                continue
            state = job["state"] + (" (cancelling)" if job["cancel_requested"] else "")
            age = job["heartbeat_age_s"]
            rows.append((
                str(job["job_id"]), job["cell"], job["method"], str(job["seed"]),
                Text(state, style=STATE_STYLE.get(job["state"], "")),
                f"{job['step']}/{job['total_steps']}" if job["total_steps"] else str(job["step"]),
                _num(job["last_val_loss"], ".4f"), _num(job["best_val_loss"], ".4f"),
                _num(job["tokens_per_s"], ",.0f"), _duration(job["eta_s"]), job["worker"] or "", job["gpu"] or "",
                Text(_duration(age), style=job_heartbeat_style(job)),
            ))
        keep = fit_columns(rows, width)
        summary = ", ".join(f"{n} {state}" for state, n in counts.items())
        table = Table(title=f"{name}: {summary}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for i in keep:
            table.add_column(COLUMNS[i], no_wrap=True,
                             justify="right" if COLUMNS[i] in ("job", "seed", "step", "tok/s") else "left")
        for r in rows:
            table.add_row(*(r[i] for i in keep))
        parts.append(table)
        for job in (j for j in snap["jobs"] if j.get("note") and name in j["grids"]):
            parts.append(Text(f"  job {job['job_id']}: {job['note']}", style="yellow"))
        errors = [j for j in snap["jobs"] if j["state"] == "failed" and j["error"] and name in j["grids"]]
        for job in errors:
            parts.append(Text(f"  job {job['job_id']} failed: {job['error'].strip().splitlines()[-1][:160]}",
                              style="red"))
    return Group(*parts)


def status(
    grid: GridOption = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every 2 s until Ctrl-C.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: grids (counts) and jobs.")] = False,
    db: DbOption = None,
) -> None:
    """Show jobs per grid: state, step, val loss, tokens/s, ETA, worker, GPU and heartbeat age."""
    from rich.console import Console

    with database(db, read_only=True) as engine:
        first = snapshot(engine=engine, grid=grid)
        check_grid(grid, first)
        if as_json:
            typer.echo(json.dumps(first, default=str))
            return
        # Piped or logged output gets a wide table instead of rich's 80-column default.
        console = Console() if sys.stdout.isatty() else Console(width=180)
        if not watch:
            console.print(render(first, grid=grid, width=console.width))
            return
        watch_status(console, first, engine=engine, grid=grid)


def watch_status(console: Any, first: dict[str, Any], *, engine: Any, grid: str | None) -> None:
    """Redraw the status table every 2 s until Ctrl-C."""
    from rich.live import Live

    try:
        with Live(render(first, grid=grid, width=console.width), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(2.0)
                snap = snapshot(engine=engine, grid=grid)
                live.update(render(snap, grid=grid, width=console.width), refresh=True)
    except KeyboardInterrupt:
        pass
