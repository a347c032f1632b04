"""`haares slurm`: an sbatch script that drains the queue with one worker per GPU on N nodes (docs/slurm.md).

Owns the script's text and the submission. The script asks Slurm for a warning signal before the time
limit (`--signal=B:USR1@S`), traps it in the batch shell and forwards it through srun to every worker,
which preempts cleanly (children checkpoint, jobs go back to the queue, no retry spent); each worker also
gets `--time-limit` as a second line of defence. Nothing here imports torch or touches the queue.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from haares import __version__
from haares.errors import HaaresError
from haares.timelimit import slurm_time

STARTUP_SLOP_S = 10.0
"""The workers' --time-limit is the allocation's minus this (the script starts a little after the allocation)."""


@dataclass(frozen=True)
class SlurmJob:
    """What the batch script runs. Times are seconds."""

    db: str
    time_s: float
    nodes: int = 1
    gpus_per_node: int = 1
    """GPUs per node, one worker each; with gpu="cpu", the number of CPU workers per node."""
    gpu: str | None = None
    """None: workers bound to GPUs 0..G-1; "cpu": CPU workers, no GPUs requested."""
    slots: int = 1
    warn_s: int = 120
    partition: str | None = None
    output: str = "haares-%j.out"
    job_name: str = "haares"
    home: str | None = None
    """HAARES_HOME on the nodes (run folders, checkpoints); None keeps the submitting environment's."""
    command: str = field(default_factory=lambda: shlex.join([sys.executable, "-m", "haares"]))
    """How the nodes run haares: by default this interpreter, so the script uses the same install."""
    sbatch_options: tuple[str, ...] = ()
    """Extra `#SBATCH` lines, e.g. "--account=abc" or "--mem=64G"."""

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1 or self.slots < 1:
            raise HaaresError("--nodes, --gpus-per-node and --slots must be at least 1")
        if self.gpu not in (None, "cpu"):
            raise HaaresError(f"--gpu takes only 'cpu' here (GPU workers are bound to 0..G-1); got {self.gpu!r}")
        if not 0 < self.warn_s < self.time_s - STARTUP_SLOP_S:
            raise HaaresError(f"--warn-seconds ({self.warn_s}) must be positive and leave more than "
                              f"{STARTUP_SLOP_S:g} s of the {self.time_s:g} s allocation")
        if self.nodes > 1 and not self.db.startswith("postgresql"):
            raise HaaresError(f"{self.nodes} nodes need a shared PostgreSQL queue: --db postgresql://user@host/db")
        bad = [o for o in self.sbatch_options if not o.startswith("--") or "\n" in o]
        if bad:
            raise HaaresError(f"--sbatch-option takes one sbatch option such as --account=abc; got {bad[0]!r}")

    @property
    def devices(self) -> list[str]:
        """The --gpu value of each worker on a node."""
        if self.gpu == "cpu":
            return ["cpu"] * self.gpus_per_node
        return [str(i) for i in range(self.gpus_per_node)]

    def worker_args(self) -> list[str]:
        """Arguments every worker gets after `worker --gpu DEV`."""
        limit = int(self.time_s - STARTUP_SLOP_S)
        grace = max(5, self.warn_s // 2)
        return ["--slots", str(self.slots), "--time-limit", f"{limit}s", "--grace", str(grace)]


# The node task (srun runs one per node): one worker per device, USR1 or TERM passed on to all of them as
# USR1 (slurmstepd usually signals them itself too; a repeated USR1 never escalates in the worker).
# Exit status: the first non-zero one. `wait` returns early (status > 128) when a trapped signal arrives.
_NODE = r"""pids=()
for dev in $HAARES_DEVICES; do "$@" --gpu "$dev" & pids+=($!); done
trap 'kill -s USR1 "${pids[@]}" 2>/dev/null' USR1 TERM
rc=0
for pid in "${pids[@]}"; do
    while :; do wait "$pid"; s=$?; if [ "$s" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then continue; fi; break; done
    if [ "$s" -ne 0 ] && [ "$rc" -eq 0 ]; then rc=$s; fi
done
exit "$rc"
"""


def script(job: SlurmJob) -> str:
    """The sbatch script's text."""
    sb = [f"--job-name={job.job_name}", f"--nodes={job.nodes}", "--ntasks-per-node=1",
          f"--time={slurm_time(job.time_s)}", f"--signal=B:USR1@{job.warn_s}", f"--output={job.output}"]
    if job.gpu != "cpu":
        sb.append(f"--gres=gpu:{job.gpus_per_node}")
    if job.partition:
        sb.append(f"--partition={job.partition}")
    sb += list(job.sbatch_options)
    home = f"export HAARES_HOME={shlex.quote(job.home)}\n" if job.home else ""
    worker = shlex.join(["worker", *job.worker_args()])
    return f"""#!/bin/bash
{chr(10).join('#SBATCH ' + line for line in sb)}
# Written by `haares slurm` (haares {__version__}): {job.nodes} node(s) x {len(job.devices)} worker(s)
# ({'CPU' if job.gpu == 'cpu' else 'one per GPU'}, --slots {job.slots}) draining the queue at HAARES_DB.
# {job.warn_s} s before the time limit Slurm sends USR1 to this shell, which forwards it to every worker:
# children checkpoint, their jobs go back to the queue as preempted (no retry spent), workers exit 0.
set -u
export HAARES_DB={shlex.quote(job.db)}
{home}export HAARES_DEVICES={shlex.quote(' '.join(job.devices))}
HAARES=({job.command})

read -r -d '' NODE_TASK <<'EOF' || true
{_NODE}EOF

srun --nodes={job.nodes} --ntasks-per-node=1 --kill-on-bad-exit=0 \\
    bash -c "$NODE_TASK" haares-node "${{HAARES[@]}}" {worker} &
SRUN=$!
forward() {{
    echo "haares slurm: $1 at $(date -u +%FT%TZ); workers checkpoint and hand their jobs back" >&2
    kill -s USR1 "$SRUN" 2>/dev/null
}}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
rc=0
while kill -0 "$SRUN" 2>/dev/null; do wait "$SRUN"; rc=$?; done
exit "$rc"
"""


def submit(text: str) -> str | None:
    """Run sbatch on the script (stdin); its output line, or None when sbatch is not on PATH.

    HaaresError with sbatch's message when it refuses the job.
    """
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        return None
    done = subprocess.run([sbatch], input=text, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise HaaresError(f"sbatch refused the job: {lines[-1] if lines else f'exit {done.returncode}'}")
    return done.stdout.strip()
