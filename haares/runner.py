"""Foreground runs (`haares run`): pick one run of a grid, train it here with a progress bar, no queue.

`resolve_run` picks the run (pure, no torch); `run_foreground` trains it with rich progress and turns
Ctrl-C / SIGTERM into a checkpoint and a one-line resume hint. The loop itself is haares.train; the
command that parses options is haares/cli/run.py.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from haares.config import parse_override
from haares.errors import HaaresError
from haares.grids import RunSpec, expand, get_grid

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

EXIT_INTERRUPTED = 130


def resolve_run(
    *, grid: str, method: str, seed: int, cell: str | None = None, sets: list[str] | None = None
) -> RunSpec:
    """The RunSpec of (grid, cell, method, seed) with `--set key=value` overrides applied.

    Raises HaaresError naming the known methods or cells when one does not exist.
    """
    spec_grid = get_grid(grid)
    if method not in spec_grid.methods:
        raise HaaresError(f"grid {grid!r} has no method {method!r}; its methods: {', '.join(spec_grid.methods)}")
    cells = list(spec_grid.cells)
    if cell is None:
        if len(cells) > 1:
            raise HaaresError(f"grid {grid!r} has several cells; pass --cell, one of: {', '.join(cells)}")
        cell = cells[0]
    elif cell not in spec_grid.cells:
        named = [c for c in cells if c]
        if not named:
            raise HaaresError(f"grid {grid!r} has no cells; drop --cell {cell}")
        raise HaaresError(f"grid {grid!r} has no cell {cell!r}; its cells: {', '.join(named)}")
    overrides = dict(parse_override(text) for text in (sets or []))
    runs = expand(spec_grid, seeds=(seed,), overrides=overrides)
    return next(r for r in runs if r.method == method and r.cell == cell)


def resume_command(
    *, grid: str, method: str, seed: int, cell: str | None, sets: list[str] | None, device: str | None,
    run_dir: Path | None,
) -> str:
    """The `haares run ...` line that continues this run (the same arguments, without --fresh)."""
    args = ["haares", "run", "--grid", grid, "--method", method, "--seed", str(seed)]
    if cell is not None:
        args += ["--cell", cell]
    for text in sets or []:
        args += ["--set", text]
    if device is not None:
        args += ["--device", device]
    if run_dir is not None:
        args += ["--run-dir", str(run_dir)]
    return shlex.join(args)


def check_device(device: str) -> str:
    """`device` if torch can use it here, else a one-line HaaresError (before any data is prepared)."""
    import torch

    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return device
    if kind != "cuda" or (index and not index.isdigit()):
        raise HaaresError(f"--device {device!r}: use cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if int(index or 0) >= count:
        raise HaaresError(f"--device {device}: torch sees {count} CUDA device(s) here "
                          f"(torch {torch.__version__}); use --device cpu, or see the README for a CUDA build")
    return device


def default_device(device: str | None) -> str:
    """`device` checked (see `check_device`), or cuda where torch sees a GPU, else cpu."""
    import torch

    return check_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def run_foreground(
    spec: RunSpec, *, device: str | None, run_dir: Path | None, fresh: bool, resume_hint: str = "haares run ..."
) -> int:
    """Train `spec` here with a rich progress bar; returns the exit code (0 done, 130 interrupted).

    resume_hint: the command printed after an interrupt (see `resume_command`).
    """
    from rich.console import Console

    from haares import train as trainer
    from haares.data import prepare
    from haares.settings import home, runs_dir
    from haares.sinks import RunInfo, RunLabel, default_sinks

    cfg = spec.config
    device = default_device(device)
    run_dir = run_dir or runs_dir() / cfg.run_key()
    # soft_wrap: messages stay one line each (log files, grep), whatever the terminal width.
    console = Console(stderr=True, soft_wrap=True)
    console.print(
        f"run {cfg.run_key()}: grid {spec.grid} {spec.cell + ' ' if spec.cell else ''}method {spec.method} "
        f"seed {spec.seed} on {device}, {cfg.train.steps} steps -> {run_dir}"
    )
    # Prepare (and cache) the data here, with its progress bars; train() then reads the cache.
    prepare(cfg.data, progress=True)
    _say_resume(console, run_dir, fresh=fresh)
    progress, callbacks = _progress_callbacks(console, spec)
    label = RunLabel(spec.grid, spec.cell, spec.method, spec.seed)
    sinks = default_sinks(RunInfo(run_key=cfg.run_key(), run_dir=run_dir, home=home(), labels=(label,)))
    should_stop = trainer.install_sigterm_handler()
    try:
        with progress:
            result = trainer.train(
                cfg, device=device, run_dir=run_dir, callbacks=sinks.wrap(callbacks), resume=not fresh,
                should_stop=should_stop,
            )
    except trainer.Preempted as stop:
        console.print(
            f"interrupted at step {stop.step}; checkpoint saved in {run_dir / 'checkpoints'}; "
            f"resume with: {resume_hint}"
        )
        return EXIT_INTERRUPTED
    except trainer.NonFiniteLoss as exc:
        console.print(f"[red]error:[/red] {exc}; the run diverged (try a lower train.lr)")
        return 1
    finally:
        sinks.close()
        should_stop.restore()
    console.print(
        f"done: best val loss {result.best_val_loss:.4f} at step {result.best_step} of {result.final_step}; "
        f"summary {result.summary}"
    )
    return 0


def _say_resume(console: Console, run_dir: Path, *, fresh: bool) -> None:
    """One line naming the checkpoint the run resumes from (nothing when it starts from step 0)."""
    from haares.checkpoint import list_checkpoints

    found = [] if fresh else list_checkpoints(run_dir / "checkpoints")
    if found:
        console.print(f"resuming from step {found[-1][0]} (checkpoint {found[-1][1]}); --fresh starts over")


def _progress_callbacks(console: Console, spec: RunSpec) -> tuple[Progress, Any]:
    """(progress bar, trainer callbacks): the bar follows steps, each evaluation prints one line above it."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from haares import train as trainer

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task(spec.method, total=spec.config.train.steps, loss="-", tps="-")

    def on_progress(step: int, loss: float, tokens_per_s: float) -> None:
        progress.update(task, completed=step, loss=f"{loss:.4f}", tps=f"{tokens_per_s:,.0f}")

    def on_eval(point: trainer.EvalPoint) -> None:
        progress.console.print(
            f"step {point.step}: val loss {point.val_loss:.4f} (ppl {point.val_ppl:.2f}, "
            f"{point.val_bpb:.3f} bpb), train loss {point.train_loss:.4f}, {point.steps_per_s:.2f} steps/s"
        )

    return progress, trainer.TrainCallbacks(on_eval=on_eval, on_progress=on_progress, progress_interval_s=0.5)
