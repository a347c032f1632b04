"""`haares logs JOB [--follow] [--attempt K]`: print (or tail) the log file of one attempt of a job.

The worker records each attempt's log path in the database; this command only reads it and the file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from haares.cli.options import DbOption


def attempt_log(*, engine: Any, job_id: int, attempt: int | None = None) -> tuple[int, Path]:
    """(attempt_no, log path) of the given attempt of a job, or of its latest one.

    HaaresError when the job or attempt does not exist or no log was recorded yet.
    """
    import sqlalchemy as sa

    from haares.errors import HaaresError
    from haares.jobs.db import read_tx
    from haares.jobs.schema import Attempt, Job

    with read_tx(engine) as conn:
        if conn.execute(sa.select(Job.id).where(Job.id == job_id)).first() is None:
            raise HaaresError(f"no job {job_id}; `haares status` lists job ids")
        query = sa.select(Attempt.attempt_no, Attempt.log_path).where(Attempt.job_id == job_id)
        runs = conn.execute(sa.select(sa.func.max(Attempt.attempt_no)).where(Attempt.job_id == job_id)).scalar()
        if attempt is not None:
            query = query.where(Attempt.attempt_no == attempt)
        row = conn.execute(query.order_by(Attempt.attempt_no.desc()).limit(1)).first()
    if row is None and not runs:
        raise HaaresError(f"job {job_id} has no attempt yet; it has not been claimed by a worker")
    if row is None:
        raise HaaresError(f"job {job_id} has no attempt {attempt}: it ran {runs} attempt(s), numbered 1 to {runs}")
    if not row.log_path:
        raise HaaresError(f"job {job_id} attempt {row.attempt_no} has no log recorded")
    return int(row.attempt_no), Path(row.log_path)


def attempt_ended(*, engine: Any, job_id: int, attempt_no: int) -> bool:
    """True once the attempt has an end time or a later attempt exists (it was reaped as lost)."""
    import sqlalchemy as sa

    from haares.jobs.db import read_tx
    from haares.jobs.schema import Attempt

    with read_tx(engine) as conn:
        rows = conn.execute(
            sa.select(Attempt.attempt_no, Attempt.ended_at).where(Attempt.job_id == job_id,
                                                                 Attempt.attempt_no >= attempt_no)
        ).all()
    return any(r.ended_at is not None or r.attempt_no > attempt_no for r in rows)


def follow(path: Path, *, done: Any, out: Any = None, poll_s: float = 0.5) -> None:
    """Copy `path` to `out` and keep copying what is appended until done() and nothing new came."""
    out = out or sys.stdout
    offset = 0
    while True:
        finished = done()  # read before the file, so the last lines written before the end are shown
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            out.write(chunk.decode(errors="replace"))
            out.flush()
        elif finished:
            return
        else:
            time.sleep(poll_s)


def register(app: typer.Typer) -> None:
    """Add `haares logs`."""

    @app.command("logs")
    def logs(
        job: Annotated[int, typer.Argument(help="Job id (see `haares status`).")],
        db: DbOption = None,
        attempt: Annotated[Optional[int], typer.Option("--attempt", "-a", help="Attempt number; default the latest.")] = None,
        follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the attempt ends.")] = False,
    ) -> None:
        """Print the log (stdout and stderr of the training child) of a job's attempt."""
        from haares.errors import HaaresError
        from haares.jobs.db import make_engine
        from haares.settings import resolve_db_url

        engine = make_engine(resolve_db_url(db), read_only=True)
        try:
            attempt_no, path = attempt_log(engine=engine, job_id=job, attempt=attempt)
            if follow_:
                follow(path, done=lambda: attempt_ended(engine=engine, job_id=job, attempt_no=attempt_no))
                return
            if not path.exists():
                raise HaaresError(f"log file {path} of job {job} attempt {attempt_no} is gone (another host?)")
            sys.stdout.write(path.read_text(errors="replace"))
        finally:
            engine.dispose()
