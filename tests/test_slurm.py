"""`haares slurm`: the sbatch script's text, its signal forwarding, and a real one-node Slurm allocation.

The script is checked as text (2 nodes x 8 GPUs, the signal request, the worker options) and by bash -n;
its trap-and-forward logic runs for real under a stand-in `srun` that only runs the node task (sleep jobs,
USR1 to the batch shell). The last test submits to the real cluster `.ci/slurm-up.sh` starts: the
allocation's time-limit warning (sent by Slurm itself) ends it mid-run, no job is left running and no
retry is spent, and a local worker then finishes the grid with every evaluation loss equal to an
uninterrupted run (bitwise).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.sleep_kind import enqueue_sleep
from fixtures.workers import HAARES, rows, start_worker, tiny_runs, wait_for

from haares import __version__
from haares.errors import HaaresError
from haares.jobs import enqueue_runs, make_engine
from haares.slurm import SlurmJob, script

PG = "postgresql://haares@dbhost/haares"


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([HAARES, "slurm", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_two_nodes_of_eight_gpus_script(tmp_path):
    done = _cli("--nodes", "2", "--gpus-per-node", "8", "--time", "4h", "--partition", "gpu", "--db", PG)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gres=gpu:8", "#SBATCH --time=4:00:00",
                 "#SBATCH --signal=B:USR1@120", "#SBATCH --partition=gpu", f"export HAARES_DB={PG}",
                 "export HAARES_DEVICES='0 1 2 3 4 5 6 7'", "trap 'forward USR1' USR1",
                 "worker --slots 1 --time-limit 14390s --grace 60"):
        assert line in text, line
    assert f"HAARES=({sys.executable} -m haares)" in text
    (tmp_path / "s.sbatch").write_text(text)
    assert subprocess.run(["bash", "-n", str(tmp_path / "s.sbatch")]).returncode == 0


def test_docs_show_the_script_the_command_writes():
    doc = (Path(__file__).parents[1] / "docs" / "slurm.md").read_text()
    shown = doc.split("```bash\n", 1)[1].split("```", 1)[0]
    job = SlurmJob(db=PG, time_s=4 * 3600, nodes=2, gpus_per_node=8, partition="gpu", home="/shared/haares",
                   command="/home/me/haares/.venv/bin/python -m haares")
    assert shown == script(job).replace(f"(haares {__version__})", "(haares 0.1.0)")  # a version bump is no drift


def test_cpu_workers_request_no_gpus():
    text = script(SlurmJob(db="sqlite:////tmp/q.db", time_s=120, gpu="cpu", gpus_per_node=2, slots=3, warn_s=60,
                           home="/tmp/h", sbatch_options=("--account=abc",)))
    assert "--gres" not in text and "export HAARES_DEVICES='cpu cpu'" in text
    assert "#SBATCH --account=abc" in text and "export HAARES_HOME=/tmp/h" in text
    assert "worker --slots 3 --time-limit 110s --grace 30" in text


@pytest.mark.parametrize("args, message", [
    (["--nodes", "2", "--time", "1h", "--db", "sqlite:////tmp/q.db"], "need a shared PostgreSQL"),
    (["--time", "1h", "--gpu", "3"], "--gpu takes only 'cpu'"),
    (["--time", "an hour"], "cannot read 'an hour' as a duration"),
    (["--time", "2m", "--warn-seconds", "115"], "--warn-seconds"),
    (["--time", "1h", "--sbatch-option", "account=abc"], "--sbatch-option"),
])
def test_bad_options_are_one_error_line(args, message):
    done = _cli(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and message in done.stderr and len(done.stderr.splitlines()) == 1


def test_submit_without_sbatch_prints_the_script_and_says_so(tmp_path):
    done = _cli("--time", "1h", "--db", PG, "--submit", env={"PATH": str(tmp_path)})
    assert done.returncode == 0
    assert "sbatch is not on PATH" in done.stderr and done.stdout.startswith("#!/bin/bash")


def test_slurm_job_rejects_bad_counts():
    with pytest.raises(HaaresError, match="at least 1"):
        SlurmJob(db=PG, time_s=3600, nodes=0)


FAKE_SRUN = """#!/bin/bash
# Stand-in for srun on one node: drop srun's own options, run the task.
while [ $# -gt 0 ] && [ "${1#--}" != "$1" ]; do shift; done
exec "$@"
"""


@pytest.mark.slow
def test_usr1_to_the_batch_shell_reaches_every_worker_and_preempts(sqlite_url, tmp_path, home):
    """What Slurm's B:USR1 warning does, without Slurm: trap, forward through 'srun' and the node task."""
    engine = make_engine(sqlite_url)
    enqueue_sleep(engine=engine, count=2, seconds=120)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    text = script(SlurmJob(db=sqlite_url, time_s=600, gpu="cpu", gpus_per_node=2, warn_s=60, home=str(home)))
    (tmp_path / "job.sbatch").write_text(text)
    log = open(tmp_path / "job.out", "wb")
    batch = subprocess.Popen(["bash", str(tmp_path / "job.sbatch")], stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    wait_for(lambda: len(rows(engine, "SELECT 1 FROM attempts WHERE log_path IS NOT NULL")) == 2, timeout=60,
             what="both workers to claim a job")
    batch.send_signal(signal.SIGUSR1)
    assert batch.wait(timeout=60) == 0
    out = (tmp_path / "job.out").read_text()
    assert "haares slurm: USR1" in out and out.count("stopped by SIGUSR1; 1 claimed: 1 preempted") == 2, out
    assert rows(engine, "SELECT DISTINCT status, attempts FROM jobs") == [("queued", 0)]
    assert rows(engine, "SELECT DISTINCT outcome FROM attempts") == [("preempted",)]
    engine.dispose()


# --- the real cluster --------------------------------------------------------------------------------

# Slurm sends the warning (`--signal=B:USR1@60` of a 2-minute allocation) at its first periodic check
# (every 30 s) after the allocation's 30th second: anywhere from 30 to 60 s in. So that every run ends
# mid-run however fast the machine and whenever the warning comes, the test freezes (SIGSTOP) each of
# the allocation's children once it has evaluated (and checkpointed) at step EVERY, and thaws them
# (SIGCONT) once the warning has reached the batch shell: they then see the workers' SIGTERM and
# checkpoint where they are. Short runs suffice for that, and the twins train during the wait.
STEPS, EVERY = 250, 50
TERMINAL = ("COMPLETED", "TIMEOUT", "CANCELLED", "FAILED", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY")


@pytest.fixture
def slurm_cluster() -> None:
    """A Slurm cluster with an idle node (.ci/slurm-up.sh). Skipped without HAARES_TEST_SLURM=1;
    fails instead of skipping under HAARES_REQUIRE_SLURM=1 (CI)."""
    required = os.environ.get("HAARES_REQUIRE_SLURM") == "1"
    problem = None
    if os.environ.get("HAARES_TEST_SLURM") != "1":
        problem = "HAARES_TEST_SLURM not set (start a one-node cluster with .ci/slurm-up.sh as root)"
    elif not shutil.which("sbatch") or not shutil.which("sinfo"):
        problem = "sbatch/sinfo not on PATH"
    else:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.split()
        if not {"idle", "mixed"} & set(states):
            problem = f"no idle Slurm node (sinfo: {states or 'nothing'})"
    if problem:
        if required:
            pytest.fail(f"HAARES_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)


def _job_state(job_id: str) -> str:
    done = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True)
    match = re.search(r"JobState=(\w+)", done.stdout)
    return match.group(1) if match else "GONE"  # purged after MinJobAge


def _child_pid(log_path: str) -> int:
    """The pid a training child printed in the first line of its attempt's log."""
    return int(re.search(r"^haares\.child job=\d+ attempt=\d+ .* pid=(\d+)$", Path(log_path).read_text(), re.M).group(1))


TWIN = """
import json, sys, pathlib, torch
sys.path.insert(0, sys.argv[1])
from fixtures.workers import tiny_runs
from haares.train import train
torch.set_num_threads(1)
steps, every, index = (int(a) for a in sys.argv[2:5])
run_dir = sys.argv[5]
spec = tiny_runs(**{"train.steps": steps, "train.eval_every": every})[index]
result = train(spec.config, device="cpu", run_dir=pathlib.Path(run_dir), resume=False)
print(json.dumps({"run_key": spec.run_key, "losses": {p.step: p.val_loss for p in result.evals}}))
"""


@pytest.mark.slow
def test_slurm_allocation_end_preempts_cleanly_and_the_grid_finishes_bitwise(slurm_cluster, tmp_path, home):
    db_url = f"sqlite:///{tmp_path / 'queue.db'}"
    engine = make_engine(db_url)
    specs = tiny_runs(**{"train.steps": STEPS, "train.eval_every": EVERY})[:3]  # seed 42: three methods
    enqueue_runs(engine=engine, grid="smoke", runs=specs)
    env = {**os.environ, "HAARES_HOME": str(home), "OMP_NUM_THREADS": "1"}
    submitted = subprocess.run(
        [HAARES, "slurm", "--gpu", "cpu", "--slots", "3", "--time", "2m", "--warn-seconds", "60", "--db", db_url,
         "--home", str(home), "--output", str(tmp_path / "slurm-%j.out"), "--job-name", "haares-test",
         "--command", f"{sys.executable} -m haares", "--submit"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    job_id = re.search(r"Submitted batch job (\d+)", submitted.stdout).group(1)
    output = tmp_path / f"slurm-{job_id}.out"

    def ended() -> bool:
        return _job_state(job_id) in (*TERMINAL, "GONE")

    def warned() -> bool:
        return output.exists() and "haares slurm: USR1" in output.read_text()

    frozen: dict[int, int] = {}  # job id -> its child's pid, stopped

    def freeze_the_evaluated() -> bool:
        for job_id_, log_path in rows(engine, "SELECT a.job_id, a.log_path FROM attempts a WHERE a.log_path IS NOT "
                                              "NULL AND EXISTS (SELECT 1 FROM evals e WHERE e.job_id = a.job_id)"):
            if job_id_ not in frozen:
                frozen[job_id_] = _child_pid(log_path)
                os.kill(frozen[job_id_], signal.SIGSTOP)
        return len(frozen) == len(specs) or warned() or ended()

    def thaw() -> None:
        for pid in frozen.values():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    twins: list[subprocess.Popen] = []
    try:
        wait_for(freeze_the_evaluated, timeout=120, every=0.2, what="the allocation's children to evaluate")
        # The uninterrupted twins train while the allocation waits for its warning.
        twins = [subprocess.Popen([sys.executable, "-c", TWIN, str(Path(__file__).parent), str(STEPS), str(EVERY),
                                   str(i), str(tmp_path / f"twin{i}")], stdout=subprocess.PIPE, text=True, env=env)
                 for i in range(len(specs))]
        wait_for(lambda: warned() or ended(), timeout=150, every=0.2, what="Slurm's warning")
        thaw()
        wait_for(ended, timeout=120, every=0.5, what=f"Slurm job {job_id} to end")
        _finish_after_the_allocation(engine, db_url, home, tmp_path, output, twins)
    finally:  # nothing stays frozen, queued in Slurm or training if the test fails
        thaw()
        if not ended():
            subprocess.run(["scancel", job_id])
        for twin in twins:
            if twin.poll() is None:
                twin.kill()
    engine.dispose()


def _finish_after_the_allocation(engine, db_url: str, home, tmp_path, output, twins) -> None:  # noqa: ANN001
    """The allocation's end as the queue saw it, then a local worker finishes the grid; the losses of every
    evaluation equal the twins' (bitwise)."""
    out = output.read_text()
    assert "haares slurm: USR1" in out and "stopped by SIGUSR1" in out, out

    states = rows(engine, "SELECT status, attempts FROM jobs")
    assert all(s in (("queued", 0), ("succeeded", 1)) for s in states), states  # none running, no retry spent
    outcomes = rows(engine, "SELECT outcome, end_step FROM attempts")
    assert all(o in ("preempted", "succeeded") for o, _ in outcomes), outcomes
    assert any(o == "preempted" and 0 < step < STEPS for o, step in outcomes), outcomes  # ended mid-run

    local = start_worker(db_url, "--gpu", "cpu", "--slots", "3", "--poll", "0.5", log=tmp_path / "local.log",
                         env={"HAARES_HOME": str(home), "OMP_NUM_THREADS": "1"})
    assert local.wait(timeout=300) == 0, (tmp_path / "local.log").read_text()[-3000:]
    assert rows(engine, "SELECT DISTINCT status, attempts FROM jobs") == [("succeeded", 1)]
    resumed = rows(engine, "SELECT start_step FROM attempts WHERE attempt_no = 2")
    assert resumed and all(step > 0 for (step,) in resumed)  # resumed from the allocation's checkpoints

    expected = {}
    for twin in twins:
        stdout, _ = twin.communicate(timeout=300)
        assert twin.returncode == 0
        record = json.loads(stdout.strip().splitlines()[-1])
        expected[record["run_key"]] = {int(k): v for k, v in record["losses"].items()}
    assert len(expected) == 3
    for run_key, losses in expected.items():
        got = dict(rows(engine, "SELECT e.step, e.val_loss FROM evals e JOIN jobs j ON j.id = e.job_id "
                                "WHERE j.run_key = :k", k=run_key))
        assert got == losses, run_key  # bitwise: the resumed runs saw the same batches from the same state
