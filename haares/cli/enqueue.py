"""`haares enqueue`: expand a named grid into runs and put them on the queue, idempotently."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from haares.cli.options import DbOption, database
from haares.errors import HaaresError


def parse_seeds(raw: str | None) -> tuple[int, ...] | None:
    """'42,123' -> (42, 123); None stays None (all of the grid's seeds)."""
    if raw is None:
        return None
    try:
        seeds = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise HaaresError(f"--seeds must be comma-separated integers such as 42,123; got {raw!r}") from None
    if not seeds:
        raise HaaresError("--seeds is empty; give comma-separated integers such as 42,123")
    return seeds


def parse_cells(raw: str | None) -> tuple[str, ...] | None:
    """'48L,24L' -> ('48L', '24L'); None stays None (all of the grid's cells)."""
    if raw is None:
        return None
    cells = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not cells:
        raise HaaresError("--cells is empty; give comma-separated cell names such as 48L (see `haares grids`)")
    return cells


def config_overrides(
    *, steps: int | None, eval_every: int | None, eval_tokens: int | None, precision: str | None
) -> dict[str, Any]:
    """The enqueue options that change every run's config (and so its run key)."""
    pairs = {"train.steps": steps, "train.eval_every": eval_every, "data.eval_tokens": eval_tokens,
             "train.precision": precision}
    return {path: value for path, value in pairs.items() if value is not None}


def merge_overrides(flags: dict[str, Any], *, sets: list[str] | None, path: str | None) -> dict[str, Any]:
    """The flag overrides plus `--set key=value` ones and `--path` (data.path, made absolute).

    The same key given twice (say --steps and --set train.steps) is a HaaresError: which should win?
    """
    from pathlib import Path

    from haares.config import parse_override

    extra = [parse_override(text) for text in sets or []]
    if path is not None:
        extra.append(("data.path", str(Path(path).expanduser().resolve())))
    merged = dict(flags)
    for key, value in extra:
        if key in merged:
            raise HaaresError(f"{key} is given twice (by --set, --path or its own option); give it once")
        merged[key] = value
    return merged


def print_dry_run(grid: str, runs: list[Any]) -> None:
    """The runs a grid expands to, as a rich table (nothing is written)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{grid}: {len(runs)} runs (dry run, nothing written)")
    for col in ("pair", "cell", "method", "seed", "steps", "run_key"):
        table.add_column(col)
    for r in runs:
        table.add_row(str(r.pair_index), r.cell, r.method, str(r.seed), str(r.config.train.steps), r.run_key)
    Console().print(table)


def enqueue(
    grid: Annotated[str, typer.Option("--grid", "-g", help="Grid name (see `haares grids`).")],
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps per run (changes run keys).")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Evaluate every N steps (changes run keys).")] = None,
    eval_tokens: Annotated[
        Optional[int], typer.Option(help="Validation tokens per eval; 0 = whole split (changes run keys).")
    ] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Only these of the grid's seeds, e.g. 42,123.")] = None,
    cells: Annotated[
        Optional[str], typer.Option(help="Only these of the grid's cells, e.g. 48L (see `haares grids`).")
    ] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32 or bf16 (changes run keys).")] = None,
    sets: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Config override key=value for every run, repeatable (changes run keys)."),
    ] = None,
    path: Annotated[
        Optional[str],
        typer.Option("--path", help="Local dataset file or hub-shaped folder, as workers see it (changes run keys)."),
    ] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs; write nothing.")] = False,
    db: DbOption = None,
) -> None:
    """Expand a grid into paired runs and add them to the queue (a second call adds nothing).

    On hosts without the Hugging Face hub, --path points every run at local files (see the README).
    """
    from haares.grids import expand, get_grid

    runs = expand(
        get_grid(grid),
        seeds=parse_seeds(seeds),
        cells=parse_cells(cells),
        overrides=merge_overrides(
            config_overrides(steps=steps, eval_every=eval_every, eval_tokens=eval_tokens, precision=precision),
            sets=sets, path=path,
        ),
    )
    if dry_run:
        print_dry_run(grid, runs)
        return

    from haares.jobs import enqueue_runs, reap
    from haares.provenance import code_ref
    from haares.settings import host_name

    with database(db) as engine:
        reap(engine=engine, host=host_name())
        ref = code_ref()
        result = enqueue_runs(engine=engine, grid=grid, runs=runs, priority=priority, code_ref=ref)
    typer.echo(f"{grid}: {result.new} new, {result.existing} existing")
    if result.new == 0 and runs:
        typer.echo("nothing to add: every run of this grid is already queued or done")
    if result.other_code_ref:
        typer.echo(f"note: {result.other_code_ref} existing runs were enqueued from another code version "
                   f"(now {ref}); they are kept, not duplicated")
