"""The queue commands end to end through the real entry point (`haares.cli.app.main`): enqueue is
idempotent and `--seeds` only selects, `--dry-run` writes nothing, status --json has the documented
fields, admin commands change states, user mistakes are one-line errors with exit 2 that leave the
database unchanged (unknown grid, malformed URL, unreachable PostgreSQL, NFS, unknown job), and every
command has --help text."""

from __future__ import annotations

import json
import sys

import pytest
from fixtures.queue import dump

from haares.cli.app import app
from haares.jobs import db as jobs_db

JOB_FIELDS = {"job_id", "run_key", "grids", "cell", "method", "seed", "state", "step", "total_steps",
              "best_val_loss", "last_val_loss", "tokens_per_s", "eta_s", "attempts", "worker", "gpu",
              "heartbeat_age_s"}


def test_enqueue_idempotent_and_seeds_select(cli, db_url):
    assert cli("enqueue", "--grid", "main48", "--seeds", "42", "--steps", "50", "--db", db_url)[1].startswith(
        "main48: 3 new, 0 existing")
    code, out, _ = cli("enqueue", "--grid", "main48", "--steps", "50", "--db", db_url)
    assert code == 0 and "main48: 6 new, 3 existing" in out
    code, out, _ = cli("enqueue", "--grid", "main48", "--steps", "50", "--db", db_url)
    assert "0 new, 9 existing" in out and "nothing to add" in out
    code, out, _ = cli("status", "--json", "--db", db_url)
    snap = json.loads(out)
    assert set(snap) == {"grids", "jobs"}
    assert snap["grids"] == {"main48": {"queued": 9}}
    assert len(snap["jobs"]) == 9 and all(JOB_FIELDS <= set(j) for j in snap["jobs"])
    assert {j["total_steps"] for j in snap["jobs"]} == {50}
    code, out, _ = cli("status", "--db", db_url)
    assert code == 0 and "main48: 9 queued" in out and "block_attnres" in out


def test_dry_run_writes_nothing(cli, tmp_path):
    target = tmp_path / "q.db"
    code, out, _ = cli("enqueue", "--grid", "smoke", "--dry-run", "--db", f"sqlite:///{target}")
    assert code == 0 and "6 runs (dry run" in out and "haares" in out
    assert not target.exists()


def test_admin_commands(cli, sqlite_url):
    cli("enqueue", "--grid", "smoke", "--db", sqlite_url)
    assert cli("hold", "--grid", "smoke", "--db", sqlite_url)[1].strip() == "held 6 jobs"
    assert cli("release", "1", "2", "--db", sqlite_url)[1].strip() == "released 2 jobs"
    assert cli("cancel", "1", "--db", sqlite_url)[1].startswith("cancelled 1 jobs")
    assert cli("retry", "1", "--fresh", "--db", sqlite_url)[1].strip() == "requeued 1 jobs (fresh start)"
    snap = json.loads(cli("status", "--json", "--grid", "smoke", "--db", sqlite_url)[1])
    assert snap["grids"] == {"smoke": {"held": 4, "queued": 2}}


@pytest.mark.parametrize(
    "args, message",
    [
        (["enqueue", "--grid", "nope"], "error: unknown grid 'nope'"),
        (["enqueue", "--grid", "main48", "--seeds", "4x"], "error: --seeds must be comma-separated integers"),
        (["enqueue", "--grid", "main48", "--precision", "fp8"], "error: train.precision must be one of"),
        (["cancel", "999"], "error: no job with id 999"),
        (["hold"], "error: name the jobs"),
        (["retry", "--grid", "depth"], "error: no jobs in grid 'depth'"),
    ],
)
def test_user_mistakes_leave_database_unchanged(cli, sqlite_url, args, message):
    cli("enqueue", "--grid", "smoke", "--db", sqlite_url)
    before = dump(sqlite_url)
    code, out, err = cli(*args, "--db", sqlite_url)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1
    assert dump(sqlite_url) == before


@pytest.mark.parametrize(
    "url, message",
    [
        ("sqlite:/nope::", "error: malformed database URL"),
        ("oracle://x@y/z", "error: unsupported database 'oracle'"),
        ("postgresql://postgres@127.0.0.1:1/test", "error: cannot connect to PostgreSQL at"),
    ],
)
@pytest.mark.parametrize("command", [["status"], ["enqueue", "--grid", "smoke"], ["cancel", "1"]])
def test_bad_database_urls(cli, tmp_path, monkeypatch, url, message, command):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(*command, "--db", url)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_sqlite_on_nfs_is_refused(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(jobs_db, "fs_magic", lambda path: 0x6969)
    code, _, err = cli("enqueue", "--grid", "smoke", "--db", f"sqlite:///{tmp_path}/q.db")
    assert code == 2 and "network filesystem (NFS)" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_grids_lists_every_grid_with_estimate(cli):
    from haares.cli.grids import grid_summaries
    from haares.grids import GRIDS

    code, out, _ = cli("grids")
    assert code == 0
    for name in GRIDS:
        assert name in out
    flat = " ".join(out.split())
    assert "TFLOP/s sustained" in flat and "2.08 steps/s" in flat
    rows = {r["grid"]: r for r in grid_summaries()}
    assert rows["main48"]["runs"] == 9 and rows["ablations"]["runs"] == 24 and rows["domains"]["runs"] == 180
    # calibrated on the paper: one medium-48L run is 30,000 / 2.08 steps/s = 4.0 h, so main48 is about 36 h
    assert 30 < rows["main48"]["gpu_hours"] < 42


def test_every_command_has_help(cli):
    import typer

    commands = typer.main.get_command(app).commands
    assert {"enqueue", "status", "cancel", "retry", "hold", "release", "grids"} <= set(commands)
    for name, command in commands.items():
        code, out, _ = cli(name, "--help")
        assert code == 0, name
        assert command.help and command.help.strip().splitlines()[0][:30] in " ".join(out.split()), name


@pytest.mark.slow
def test_status_watch_refreshes_until_ctrl_c(tmp_path):
    """`haares status --watch` redraws from the database every 2 s and leaves cleanly on Ctrl-C."""
    import signal
    import subprocess
    import time

    db = f"sqlite:///{tmp_path / 'watch.db'}"
    haares = [sys.executable, "-m", "haares.cli.app"]
    subprocess.run([*haares, "enqueue", "--grid", "smoke", "--db", db], check=True, capture_output=True)
    proc = subprocess.Popen([*haares, "status", "--watch", "--db", db], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(5.0)  # start-up plus at least one 2 s refresh
    subprocess.run([*haares, "hold", "--grid", "smoke", "--db", db], check=True, capture_output=True)
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    # Off a terminal rich prints only the last frame: it must show the hold made after start-up,
    # when the first frame said "6 queued", so a refresh read the database again.
    assert "6 held" in out and "queued" not in out
