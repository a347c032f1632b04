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


def test_enqueue_cells_select(cli, db_url):
    code, out, _ = cli("enqueue", "--grid", "shakespeare", "--cells", "48L", "--seeds", "42", "--db", db_url)
    assert code == 0 and out.startswith("shakespeare: 3 new, 0 existing")
    snap = json.loads(cli("status", "--json", "--db", db_url)[1])
    assert [(j["cell"], j["seed"]) for j in snap["jobs"]] == [("48L", 42)] * 3


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
        (["enqueue", "--grid", "smoke", "--cells", "48L"], "error: cells ['48L'] are not in grid 'smoke'"),
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
def test_status_watch_refreshes_until_ctrl_c(cli, tmp_path):
    """`haares status --watch` redraws from the database every 2 s and leaves cleanly on Ctrl-C.

    On a terminal (a pseudo-terminal here) rich draws every frame, so the test waits for the frames
    themselves instead of sleeping: the first says "6 queued"; after the hold, a later one says "6 held",
    so a refresh read the database again."""
    import os
    import pty
    import re
    import signal
    import subprocess

    from fixtures.workers import wait_for

    db = f"sqlite:///{tmp_path / 'watch.db'}"
    assert cli("enqueue", "--grid", "smoke", "--db", db)[0] == 0
    main_fd, term_fd = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "haares.cli.app", "status", "--watch", "--db", db], stdin=term_fd,
                            stdout=term_fd, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    os.close(term_fd)
    os.set_blocking(main_fd, False)
    drawn: list[str] = []

    def shown(text: str) -> bool:
        """Whether `text` is on the screen drawn so far (styles stripped, white space folded)."""
        try:
            while chunk := os.read(main_fd, 1 << 16):
                drawn.append(chunk.decode(errors="replace"))
        except (BlockingIOError, OSError):  # nothing more to read yet; OSError (EIO): the process ended
            pass
        return text in " ".join(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", "".join(drawn)).split())

    try:
        wait_for(lambda: shown("smoke: 6 queued"), timeout=60, what="the first frame")
        assert not shown("held")
        assert cli("hold", "--grid", "smoke", "--db", db)[0] == 0
        wait_for(lambda: shown("smoke: 6 held"), timeout=30, what="a frame redrawn after the hold")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main_fd)
