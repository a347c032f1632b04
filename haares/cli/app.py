"""The `haares` command: one Typer app; each command lives in its own module under cli/.

Commands import torch lazily (only `worker`, `run` and `bench` need it), so `haares status`,
`enqueue` and `report` start fast. User mistakes (HaaresError, ConfigError) become one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from haares import __version__

app = typer.Typer(
    name="haares",
    help="Paired-experiment orchestrator for residual-routing research (HAARES, Block AttnRes, baselines).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module registers its commands on `app` when imported (`register(app)`).
COMMAND_MODULES: list[str] = ["worker", "logs", "report", "enqueue", "status", "manage", "grids", "data", "bench", "run", "pack", "slurm"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"haares {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Paired-experiment orchestrator for residual-routing research."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"haares.cli.{_name}").register(app)


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one line and exit 2."""
    from haares.config import ConfigError
    from haares.errors import HaaresError

    try:
        # In non-standalone mode click returns a command's typer.Exit code instead of raising it.
        code = app(standalone_mode=False)
    except (HaaresError, ConfigError) as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if _is_database_error(exc):
            # A database that opened but fails later (damaged pages, a dropped server): one line, no traceback.
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            typer.secho(f"error: database error: {first[0] if first else type(exc).__name__}", err=True, fg="red")
            sys.exit(2)
        # Usage errors (missing option, bad value) arrive here in non-standalone mode. Typer may
        # vendor click, so recognise click's exceptions by what they offer, not by class.
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def _is_database_error(exc: BaseException) -> bool:
    """A SQLAlchemy DBAPIError, checked without importing SQLAlchemy when no command loaded it."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    return sa_exc is not None and isinstance(exc, sa_exc.DBAPIError)


if __name__ == "__main__":
    main()
