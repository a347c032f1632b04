"""`haares slurm`: write (or submit) an sbatch script with one worker per GPU per node.

The script's text is haares.slurm.script; this module parses options, then prints or submits it.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from haares.cli.options import DbOption


def slurm(
    time: Annotated[str, typer.Option("--time", help="Allocation time limit: 30m, 4h, 1:30:00.")],
    db: DbOption = None,
    nodes: Annotated[int, typer.Option("--nodes", help="Nodes; more than one needs a PostgreSQL --db.")] = 1,
    gpus_per_node: Annotated[int, typer.Option(
        "--gpus-per-node", help="GPUs per node, one worker each (with --gpu cpu: CPU workers per node).")] = 1,
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="cpu: CPU workers, no GPUs requested.")] = None,
    slots: Annotated[int, typer.Option("--slots", help="Jobs each worker runs at once on its device.")] = 1,
    partition: Annotated[Optional[str], typer.Option("--partition", "-p", help="Slurm partition.")] = None,
    warn_seconds: Annotated[int, typer.Option(
        "--warn-seconds", help="Seconds before the time limit at which Slurm signals USR1 and the workers "
        "preempt their jobs.")] = 120,
    output: Annotated[str, typer.Option("--output", "-o", help="Slurm's log file (%j: job id).")] = "haares-%j.out",
    job_name: Annotated[str, typer.Option("--job-name", "-J", help="Slurm job name.")] = "haares",
    home: Annotated[Optional[str], typer.Option(
        "--home", help="HAARES_HOME on the nodes (run folders); default: the submitting environment's.")] = None,
    command: Annotated[Optional[str], typer.Option(
        "--command", help="How nodes run haares; default this Python: `<python> -m haares`.")] = None,
    sbatch_option: Annotated[Optional[list[str]], typer.Option(
        "--sbatch-option", help="Extra sbatch option, repeatable: --sbatch-option=--account=abc.")] = None,
    submit: Annotated[bool, typer.Option(
        "--submit", help="Run sbatch on the script (prints it instead when sbatch is not on PATH).")] = False,
) -> None:
    """Write an sbatch script that drains the queue: one `haares worker` per GPU on every node.

    Slurm signals USR1 --warn-seconds before the time limit; the script forwards it to the workers,
    whose jobs checkpoint and go back to the queue (no job left running, no retry spent). Prints the
    script, or with --submit submits it.
    """
    from haares.settings import resolve_db_url
    from haares.slurm import SlurmJob, script
    from haares.slurm import submit as run_sbatch
    from haares.timelimit import parse_duration

    extra = {"command": command} if command else {}
    job = SlurmJob(
        db=resolve_db_url(db), time_s=parse_duration(time), nodes=nodes, gpus_per_node=gpus_per_node,
        gpu=gpu.strip().lower() if gpu else None, slots=slots, warn_s=warn_seconds, partition=partition,
        output=output, job_name=job_name, home=home, sbatch_options=tuple(sbatch_option or ()), **extra,
    )
    text = script(job)
    if not submit:
        typer.echo(text, nl=False)
        return
    answer = run_sbatch(text)
    if answer is None:
        typer.echo("sbatch is not on PATH; here is the script to submit yourself:", err=True)
        typer.echo(text, nl=False)
        return
    typer.echo(answer)
