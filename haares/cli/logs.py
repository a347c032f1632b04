"""`haares logs JOB [--follow] [--attempt K]`: print (or tail) the log file of one attempt of a job.

The worker records each attempt's log path in the database; this command reads it (haares.jobs.queries)
and then the file.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from haares.cli.options import DbOption, database


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


def logs(
    job: Annotated[int, typer.Argument(help="Job id (see `haares status`).")],
    db: DbOption = None,
    attempt: Annotated[Optional[int], typer.Option("--attempt", "-a", help="Attempt number; default the latest.")] = None,
    follow_: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the attempt ends.")] = False,
) -> None:
    """Print the log (stdout and stderr of the training child) of a job's attempt."""
    from haares.errors import HaaresError
    from haares.jobs.queries import attempt_ended, attempt_log

    with database(db, read_only=True) as engine:
        attempt_no, path = attempt_log(engine=engine, job_id=job, attempt=attempt)
        if follow_:
            follow(path, done=lambda: attempt_ended(engine=engine, job_id=job, attempt_no=attempt_no))
            return
    if not path.exists():
        raise HaaresError(f"log file {path} of job {job} attempt {attempt_no} is gone (another host?)")
    sys.stdout.write(path.read_text(errors="replace"))
