"""`haares cancel|retry|hold|release`: change the state of jobs chosen by id or by grid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Optional

import typer

from haares.cli.options import DbOption, GridOption, database

JobIds = Annotated[Optional[list[int]], typer.Argument(help="Job ids (see `haares status`).", show_default=False)]


def apply(op_name: str, *, db: str | None, job_ids: list[int] | None, grid: str | None, fresh: bool = False) -> int:
    """Open the database and run one admin operation of haares.jobs.admin; returns jobs changed.

    Changing nothing is a mistake (HaaresError saying what state the jobs are in and what the operation takes).
    """
    from haares.errors import HaaresError
    from haares.jobs import admin

    op: Callable[..., int] = getattr(admin, op_name)
    with database(db, create=False) as engine:
        changed = op(engine=engine, job_ids=job_ids or None, grid=grid, fresh=fresh)
        if changed == 0:
            raise HaaresError(admin.why_unchanged(engine=engine, op=op_name, job_ids=job_ids or None, grid=grid))
        return changed


def cancel(job_ids: JobIds = None, grid: GridOption = None, db: DbOption = None) -> None:
    """Cancel jobs: queued/held ones at once, running ones are stopped by their worker."""
    typer.echo(f"cancelled {apply('cancel', db=db, job_ids=job_ids, grid=grid)} jobs "
               "(running ones stop at their next heartbeat)")


def retry(
    job_ids: JobIds = None,
    grid: GridOption = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start from step 0 instead of the last checkpoint.")] = False,
    db: DbOption = None,
) -> None:
    """Requeue failed or cancelled jobs with a full retry budget (resuming unless --fresh)."""
    n = apply("retry", db=db, job_ids=job_ids, grid=grid, fresh=fresh)
    typer.echo(f"requeued {n} jobs" + (" (fresh start)" if fresh else ""))


def hold(job_ids: JobIds = None, grid: GridOption = None, db: DbOption = None) -> None:
    """Keep queued jobs from being claimed until `haares release`."""
    typer.echo(f"held {apply('hold', db=db, job_ids=job_ids, grid=grid)} jobs")


def release(job_ids: JobIds = None, grid: GridOption = None, db: DbOption = None) -> None:
    """Put held jobs back on the queue."""
    typer.echo(f"released {apply('release', db=db, job_ids=job_ids, grid=grid)} jobs")
