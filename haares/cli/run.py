"""`haares run`: train one run of a grid in the foreground with a progress bar, no queue.

The work is haares.runner (resolve the run, train it, print progress); this module parses options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def run_command(
    grid: Annotated[str, typer.Option("--grid", "-g", help="Grid name (see `haares grids`).")],
    method: Annotated[str, typer.Option("--method", "-m", help="Method of the grid, e.g. haares.")],
    seed: Annotated[int, typer.Option("--seed", "-s", help="Model seed (one of the grid's seeds).")],
    cell: Annotated[Optional[str], typer.Option("--cell", help="Cell of a grid with conditions, e.g. 24L.")] = None,
    sets: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Config override key=value, repeatable, e.g. --set train.steps=200."),
    ] = None,
    device: Annotated[
        Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda if available).")
    ] = None,
    run_dir: Annotated[
        Optional[Path], typer.Option("--run-dir", help="Run folder (default: HAARES_HOME/runs/<run_key>).")
    ] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore existing checkpoints and start over.")] = False,
) -> None:
    """Train one run of a grid in the foreground (no queue); Ctrl-C checkpoints, rerun to resume.

    Its results stay in the run folder: they never reach the queue database or `haares report`.
    """
    from haares.runner import resolve_run, resume_command, run_foreground

    spec = resolve_run(grid=grid, method=method, seed=seed, cell=cell, sets=sets)
    hint = resume_command(grid=grid, method=method, seed=seed, cell=cell, sets=sets, device=device, run_dir=run_dir)
    code = run_foreground(spec, device=device, run_dir=run_dir, fresh=fresh, resume_hint=hint)
    if code:
        raise typer.Exit(code)
