"""Checks what the CLI does with a database it cannot use: a file that is not a database, a damaged one,
a path under a file, a read-only results home (a real read-only mount: reading commands work, writing
ones refuse in one line), and reading commands pointed at a database that does not exist (they create
nothing). Every refusal is one `error:` line, exit 2, no traceback, files unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from fixtures.report_db import build_grid_db

from haares.jobs.schema import Base

REPO = Path(__file__).resolve().parents[1]
SMOKE = {
    ("", "block_attnres", 42): {"evals": [(50, 2.4), (100, 2.2)]},
    ("", "haares", 42): {"evals": [(50, 2.3), (100, 2.1)]},
    ("", "standard", 42): {"status": "queued", "evals": []},
}
READERS = [["status"], ["report", "--table", "4", "--grid", "smoke"], ["logs", "1"]]
WRITERS = [["enqueue", "--grid", "smoke"], ["cancel", "1"], ["worker", "--gpu", "cpu", "--once"]]


def cli(*args: str, prefix: tuple[str, ...] = (), home: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m haares ARGS` in a real process (optionally under `prefix`, e.g. a read-only mount)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    if home is not None:
        env["HAARES_HOME"] = str(home)
    return subprocess.run([*prefix, sys.executable, "-m", "haares", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("args", READERS + WRITERS[:2])
def test_a_file_that_is_not_a_database(tmp_path, args):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 200)
    before = path.read_bytes()
    assert_one_line_error(cli(*args, "--db", f"sqlite:///{path}"), "not a SQLite database")
    assert path.read_bytes() == before


@pytest.mark.parametrize("args", READERS)
def test_a_damaged_database(tmp_path, args):
    path = tmp_path / "queue.db"
    build_grid_db(f"sqlite:///{path}", "smoke", SMOKE).dispose()
    raw = bytearray(path.read_bytes())
    assert len(raw) > 8192
    raw[4096:] = b"\xa5" * (len(raw) - 4096)  # every page after the first: scribbled over
    path.write_bytes(bytes(raw))
    assert_one_line_error(cli(*args, "--db", f"sqlite:///{path}"))


@pytest.mark.parametrize("args", READERS + WRITERS)
def test_a_database_path_under_a_file(tmp_path, args):
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder should be")
    result = cli(*args, "--db", f"sqlite:///{blocker}/queue.db")
    assert_one_line_error(result, str(blocker))
    assert blocker.read_text() == "a file where a folder should be"


@pytest.mark.parametrize("args", READERS)
def test_reading_commands_create_nothing(tmp_path, args):
    missing = tmp_path / "not-yet" / "queue.db"
    assert_one_line_error(cli(*args, "--db", f"sqlite:///{missing}"), "no database at")
    assert not missing.parent.exists()


@pytest.mark.parametrize("args", READERS)
def test_reading_commands_create_no_tables_on_postgresql(pg_url, args):
    assert_one_line_error(cli(*args, "--db", pg_url), "no haares queue")
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        assert not any(sa.inspect(conn).has_table(t) for t in Base.metadata.tables)
    engine.dispose()


def test_reading_commands_refuse_an_unknown_default_home(tmp_path):
    home = tmp_path / "fresh-home"
    assert_one_line_error(cli("status", home=home), "no database at")
    assert not home.exists()


@pytest.mark.parametrize(("name", "needle"), [("curves.txt", ".png"), ("folder", "is a folder")])
def test_plot_targets_that_are_not_image_files(tmp_path, name, needle):
    db = tmp_path / "queue.db"
    build_grid_db(f"sqlite:///{db}", "smoke", SMOKE).dispose()
    (tmp_path / "folder").mkdir()
    target = tmp_path / name
    result = cli("report", "--table", "4", "--grid", "smoke", "--plot", str(target), "--db", f"sqlite:///{db}")
    assert_one_line_error(result, needle)
    assert result.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["folder", "queue.db"]


def _read_only_mount(folder: Path) -> tuple[str, ...]:
    """A command prefix that runs under a private read-only bind mount of `folder` (skips if impossible)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) to make a read-only mount")
    script = f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" "{folder}" && exec "$@"'
    prefix = (unshare, "-Urm", "sh", "-c", script, "sh")
    probe = subprocess.run([*prefix, "sh", "-c", f'! touch "{folder}/probe" 2>/dev/null'], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr.decode().strip()[:200]}")
    return prefix


def test_a_read_only_results_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    build_grid_db(f"sqlite:///{home / 'haares.db'}", "smoke", SMOKE).dispose()
    ro = _read_only_mount(home)
    before = sorted(p.name for p in home.iterdir())
    status = cli("status", "--json", prefix=ro, home=home)
    assert status.returncode == 0, status.stderr
    assert '"method": "haares"' in status.stdout
    report = cli("report", "--table", "4", "--grid", "smoke", prefix=ro, home=home)
    assert report.returncode == 0, report.stderr
    assert "Table 4" in report.stdout and "2.1000" in report.stdout
    assert_one_line_error(cli("enqueue", "--grid", "smoke", prefix=ro, home=home), "read-only")
    assert_one_line_error(cli("cancel", "1", prefix=ro, home=home), "read-only")
    assert sorted(p.name for p in home.iterdir()) == before
