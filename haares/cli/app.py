"""The `haares` command: one Typer app, each command a module-level function in its own module under cli/.

Commands import torch lazily (only `worker`, `run` and `bench` need it), so `haares status`,
`enqueue` and `report` start fast. User mistakes (HaaresError, ConfigError) and database failures
become one `error:` line on stderr and exit code 2, never a traceback (`HaaresGroup`).
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from typer.core import TyperGroup

from haares import __version__
from haares.cli import bench, data, enqueue, grids, logs, manage, pack, report, run, slurm, status, worker
from haares.errors import first_line


class HaaresGroup(TyperGroup):
    """The root command group: a user mistake or a database failure becomes one `error:` line and exit 2.

    Everything else is Typer's own handling: usage errors, `typer.Exit`, help.
    """

    def invoke(self, ctx: typer.Context) -> object:
        from haares.config import ConfigError
        from haares.errors import HaaresError

        try:
            return super().invoke(ctx)
        except (HaaresError, ConfigError) as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            # A database that opened but fails later (damaged pages, a dropped server): one line.
            fail(f"database error: {first_line(getattr(exc, 'orig', None) or exc)}")


def fail(message: str) -> NoReturn:
    """Print `error: MESSAGE` on stderr and exit 2 (the CLI's one way to report a user mistake)."""
    typer.secho(f"error: {message}", err=True, fg="red")
    raise typer.Exit(2)


def _is_database_error(exc: BaseException) -> bool:
    """A SQLAlchemy DBAPIError, checked without importing SQLAlchemy when no command loaded it."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    return sa_exc is not None and isinstance(exc, sa_exc.DBAPIError)


app = typer.Typer(
    name="haares",
    cls=HaaresGroup,
    help="Paired-experiment orchestrator for residual-routing research (HAARES, Block AttnRes, baselines).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"haares {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Paired-experiment orchestrator for residual-routing research."""


app.command("worker")(worker.worker)
app.command("logs")(logs.logs)
app.command("report")(report.report)
app.command("enqueue")(enqueue.enqueue)
app.command("status")(status.status)
app.command("cancel")(manage.cancel)
app.command("retry")(manage.retry)
app.command("hold")(manage.hold)
app.command("release")(manage.release)
app.command("grids")(grids.grids)
app.add_typer(data.data_app, name="data")
app.command("bench")(bench.bench)
app.command("run")(run.run_command)
app.command("pack")(pack.pack_command)
app.command("unpack")(pack.unpack_command)
app.command("slurm")(slurm.slurm)


def main() -> None:
    """Console-script entry point (`haares`): click parses, runs, prints errors and exits."""
    app()


if __name__ == "__main__":
    main()
