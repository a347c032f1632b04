"""`haares worker`: the command and how it shows running children (rich live lines or plain log lines).

The work itself is haares.worker.run_worker; this module parses options and renders its reports.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from haares.cli.options import DbOption

if TYPE_CHECKING:
    from haares.worker import Running


def _label(r: Running) -> str:
    lease = r.lease
    return f"job {lease.job_id} {lease.method} seed {lease.seed} (attempt {lease.attempt_no})"


def _steps(r: Running) -> str:
    return f"step {r.step}/{r.total_steps}" if r.total_steps else ""


class LineReporter:
    """One line when a job starts and one when it ends: quiet enough for log files."""

    def __init__(self, gpu: str) -> None:
        self.gpu = gpu

    def started(self, r: Running) -> None:
        typer.echo(f"start {_label(r)} on {self.gpu}")

    def tick(self, running: list[Running]) -> None:
        pass

    def finished(self, r: Running, outcome: str, wrote: bool) -> None:
        elapsed = time.monotonic() - r.started
        bits = [f"{outcome} after {elapsed:.1f} s", _steps(r)]
        if r.best_val_loss is not None:
            bits.append(f"best val {r.best_val_loss:.4f}")
        if outcome != "succeeded" and r.error:
            bits.append(r.error)
        if not wrote:
            bits.append("not recorded (lease lost)")
        typer.echo(f"done  {_label(r)}: " + ", ".join(b for b in bits if b))

    def message(self, text: str) -> None:
        typer.echo(text, err=True)


class LiveReporter(LineReporter):
    """On a terminal: the line reporter plus a live table row per running child."""

    def __init__(self, gpu: str) -> None:
        super().__init__(gpu)
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        # Live redirects stdout, so the start/done lines of LineReporter print above the table.
        self.live = Live(console=self.console, refresh_per_second=2, transient=True)
        self.live.start()

    def started(self, r: Running) -> None:
        self.console.print(f"start {_label(r)} on {self.gpu}")

    def tick(self, running: list[Running]) -> None:
        from rich.table import Table

        table = Table(box=None, show_header=bool(running), pad_edge=False)
        for col in ("job", "method", "seed", "step", "loss", "tokens/s", "elapsed"):
            table.add_column(col)
        for r in running:
            table.add_row(
                str(r.job_id), r.lease.method, str(r.lease.seed),
                f"{r.step}/{r.total_steps}" if r.total_steps else "-",
                f"{r.loss:.4f}" if r.loss is not None else "-",
                f"{r.tokens_per_s:,.0f}" if r.tokens_per_s else "-",
                f"{time.monotonic() - r.started:.0f} s",
            )
        self.live.update(table)

    def message(self, text: str) -> None:
        self.console.print(text)

    def close(self) -> None:
        self.live.stop()


def worker(
    gpu: Annotated[str, typer.Option("--gpu", help="Device the children use: a GPU index (0), indices (0,1) or cpu.")],
    db: DbOption = None,
    once: Annotated[bool, typer.Option("--once", help="Run one job, then exit.")] = False,
    max_jobs: Annotated[Optional[int], typer.Option("--max-jobs", help="Exit after this many jobs.")] = None,
    slots: Annotated[int, typer.Option("--slots", help="Jobs run at once on the one device.")] = 1,
    wait: Annotated[bool, typer.Option("--wait", help="Keep polling an empty queue instead of exiting.")] = False,
    heartbeat: Annotated[float, typer.Option("--heartbeat", help="Seconds between lease renewals.")] = 30.0,
    lease_ttl: Annotated[float, typer.Option("--lease-ttl", help="Seconds a lease lives without renewal.")] = 180.0,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between claims on an idle queue (+-20%).")] = 10.0,
    grace: Annotated[float, typer.Option("--grace", help="Seconds from SIGTERM to SIGKILL for a child.")] = 120.0,
    time_limit: Annotated[Optional[str], typer.Option(
        "--time-limit", help="Run at most this long (90s, 9m, 1h30m, 1:30:00): claim only jobs that can "
        "finish in time, preempt the rest cleanly before the end.")] = None,
    checkpoint_margin: Annotated[Optional[float], typer.Option(
        "--checkpoint-margin", help="Seconds before --time-limit at which children checkpoint and hand "
        "their jobs back. Default: 60, at most a fifth of the limit.")] = None,
    claim_fraction: Annotated[float, typer.Option(
        "--claim-fraction", help="Under --time-limit, claim a job whose duration cannot be estimated only "
        "while more than this fraction of the limit remains.")] = 0.5,
    checkpoint_grace: Annotated[float, typer.Option(
        "--checkpoint-grace",
        help="Seconds a job whose checkpoint is on another host's disk waits for it before this worker restarts it.",
    )] = 600.0,
) -> None:
    """Claim jobs and train each in a child process bound to one GPU (or the CPU).

    Heartbeats every --heartbeat seconds and writes evals and results to the database.

    On SIGTERM, SIGUSR1 (Slurm's time-limit warning) or Ctrl-C the children checkpoint at their next step and their jobs go back to the queue; a second Ctrl-C kills them.

    Exits when the queue has nothing to claim, unless --wait.
    """
    from haares.settings import resolve_db_url
    from haares.timelimit import parse_duration
    from haares.worker import WorkerOptions, parse_gpu, run_worker
    from haares.worker_options import check_gpu_visible, mps_running, slots_note

    options = WorkerOptions(
        gpu=parse_gpu(gpu), slots=slots, max_jobs=1 if once else max_jobs, wait=wait,
        heartbeat_s=heartbeat, lease_ttl_s=lease_ttl, poll_s=poll, grace_s=grace,
        time_limit_s=parse_duration(time_limit) if time_limit is not None else None,
        checkpoint_margin_s=checkpoint_margin, claim_fraction=claim_fraction,
        checkpoint_grace_s=checkpoint_grace,
    )
    check_gpu_visible(options.gpu)  # before the note: a host without that GPU gets one error line only
    if (note := slots_note(options.gpu, options.slots, mps=mps_running())) is not None:
        typer.echo(f"note: {note}", err=True)
    reporter = LiveReporter(options.gpu) if sys.stdout.isatty() else LineReporter(options.gpu)
    try:
        summary = run_worker(db_url=resolve_db_url(db), options=options, reporter=reporter)
    finally:
        if isinstance(reporter, LiveReporter):
            reporter.close()
    typer.echo(summary.line())
    if summary.stopped_by == "device mismatch":
        raise typer.Exit(1)
