"""Opening the database: URL validation, unreachable PostgreSQL, the network-filesystem guard, per-connection
SQLite settings, schema creation / migration / refusal of a newer schema, BUSY retried inside write
transactions, and no torch in a queue-only process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa
from fixtures.sleep_kind import enqueue_sleep

from haares.errors import HaaresError
from haares.jobs import db as jobs_db
from haares.jobs import make_engine
from haares.jobs.migrations import MIGRATIONS, VERSION_KEY, schema_version
from haares.jobs.schema import SCHEMA_VERSION, Job, Meta


@pytest.mark.parametrize(
    "url, message",
    [
        ("not a url", "malformed database URL"),
        ("mysql://root@localhost/x", "unsupported database 'mysql'"),
        ("sqlite://", "names no file"),
        ("sqlite:///:memory:", "names no file"),
        ("postgresql://postgres@127.0.0.1:5432", "names no database"),
        ("postgresql+asyncpg://u@h/db", "unsupported PostgreSQL driver"),
    ],
)
def test_bad_urls_are_one_line_errors(url, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HaaresError, match=message) as info:
        make_engine(url)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_unreachable_postgres_is_a_one_line_error():
    with pytest.raises(HaaresError, match="cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:1/x") as info:
        make_engine("postgresql://postgres@127.0.0.1:1/x")
    assert "\n" not in str(info.value)


def test_network_filesystem_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs_db, "fs_magic", lambda path: 0x6969)  # NFS_SUPER_MAGIC
    target = tmp_path / "sub" / "q.db"
    with pytest.raises(HaaresError, match=r"network filesystem \(NFS\).*--db postgresql://.*--allow-network-fs"):
        make_engine(f"sqlite:///{target}")
    assert not target.parent.exists()
    engine = make_engine(f"sqlite:///{target}", allow_network_fs=True)
    engine.dispose()
    assert target.exists()


def test_fs_magic_reads_local_filesystem(tmp_path):
    magic = jobs_db.fs_magic(tmp_path)
    assert magic is None or magic not in (0, 0x6969)


def test_sqlite_connection_settings(sqlite_url):
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        pragmas = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in
                   ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")}
    assert pragmas == {"journal_mode": "wal", "busy_timeout": 30_000, "synchronous": 2, "foreign_keys": 1}
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    enqueue_sleep(engine=engine, count=1, seconds=0)
    assert "BEGIN IMMEDIATE" in seen
    engine.dispose()


def test_fresh_database_is_stamped(db_url):
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert schema_version(conn) == SCHEMA_VERSION
    assert len(MIGRATIONS) == SCHEMA_VERSION - 1
    engine.dispose()


def test_version_1_database_is_migrated(db_url):
    engine = make_engine(db_url)
    [jid] = enqueue_sleep(engine=engine, count=1, seconds=0).job_ids
    with engine.begin() as conn:  # turn it back into a version-1 database
        _drop_columns(conn, V3_COLUMNS + V4_COLUMNS)
        conn.execute(sa.text("DROP INDEX ix_jobs_queued"))
        conn.execute(sa.text("DROP INDEX ix_grid_runs_job_id"))
        conn.execute(sa.text("ALTER TABLE jobs DROP COLUMN fresh_start"))
        conn.execute(sa.update(Meta).where(Meta.key == VERSION_KEY).values(value="1"))
    engine.dispose()
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert schema_version(conn) == SCHEMA_VERSION == 4
        names = {ix["name"] for ix in sa.inspect(conn).get_indexes("jobs")}
        assert "ix_jobs_queued" in names
        assert conn.execute(sa.select(Job.fresh_start).where(Job.id == jid)).scalar_one() is False
        assert conn.execute(sa.select(Job.ckpt_host, Job.ckpt_step, Job.note).where(Job.id == jid)).one() == (None,) * 3
    engine.dispose()


V3_COLUMNS = [("jobs", "ckpt_host"), ("jobs", "ckpt_dir"), ("jobs", "ckpt_step"), ("jobs", "note"),
              ("attempts", "ckpt_dir"), ("attempts", "ckpt_step")]


V4_COLUMNS = [("workers", "heartbeat_s"), ("workers", "lease_ttl_s")]


def _drop_columns(conn, columns: list) -> None:  # noqa: ANN001
    for table, column in columns:
        conn.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))


def test_version_2_database_gains_the_checkpoint_columns(db_url):
    engine = make_engine(db_url)
    [jid] = enqueue_sleep(engine=engine, count=1, seconds=0).job_ids
    with engine.begin() as conn:
        _drop_columns(conn, V3_COLUMNS + V4_COLUMNS)
        conn.execute(sa.update(Meta).where(Meta.key == VERSION_KEY).values(value="2"))
    engine.dispose()
    engine = make_engine(db_url, read_only=True)  # a reading command upgrades a writable database too
    with engine.connect() as conn:
        assert schema_version(conn) == 4
        columns = {(t, c["name"]) for t in ("jobs", "attempts", "workers") for c in sa.inspect(conn).get_columns(t)}
        assert set(V3_COLUMNS + V4_COLUMNS) <= columns
        assert conn.execute(sa.select(Job.status).where(Job.id == jid)).scalar_one() == "queued"
    engine.dispose()


def test_version_3_database_gains_the_worker_timing_columns(db_url):
    from haares.jobs import register_worker

    engine = make_engine(db_url)
    with engine.begin() as conn:
        _drop_columns(conn, V4_COLUMNS)
        conn.execute(sa.update(Meta).where(Meta.key == VERSION_KEY).values(value="3"))
    engine.dispose()
    engine = make_engine(db_url)
    with engine.connect() as conn:
        assert schema_version(conn) == 4
        assert set(V4_COLUMNS) <= {("workers", c["name"]) for c in sa.inspect(conn).get_columns("workers")}
    register_worker(engine=engine, worker_id="w", host="h", pid=1, gpu="cpu", version="0", heartbeat_s=0.5,
                    lease_ttl_s=2.0)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT heartbeat_s, lease_ttl_s FROM workers")).one() == (0.5, 2.0)
    engine.dispose()


def test_newer_schema_is_refused(db_url):
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.update(Meta).where(Meta.key == VERSION_KEY).values(value=str(SCHEMA_VERSION + 1)))
    engine.dispose()
    with pytest.raises(HaaresError, match="newer than this haares"):
        make_engine(db_url)


def test_busy_is_retried_not_raised(sqlite_url, monkeypatch):
    """Another connection holds the write lock past busy_timeout: write_tx backs off and gets through."""
    monkeypatch.setattr(jobs_db, "SQLITE_BUSY_TIMEOUT_MS", 20)
    monkeypatch.setattr(jobs_db, "RETRY_TOTAL_S", 15.0)
    engine = make_engine(sqlite_url)
    locker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    retries: list[str] = []
    monkeypatch.setattr(jobs_db.log, "info", lambda msg, *a: retries.append(msg % a))
    timer = threading.Timer(0.5, locker.commit)
    timer.start()
    try:
        assert enqueue_sleep(engine=engine, count=2, seconds=0).new == 2
    finally:
        timer.join()
        locker.close()
    assert retries and all("busy" in r or "retry" in r for r in retries)
    engine.dispose()


def _locked() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("UPDATE jobs", {}, sqlite3.OperationalError("database is locked"))


def test_run_write_reruns_its_body_on_retryable_errors_only(sqlite_url, monkeypatch):
    """One retry loop serves BEGIN and whole bodies: a locked body runs again, any other error at once,
    and an error that outlasts RETRY_TOTAL_S becomes one HaaresError line."""
    monkeypatch.setattr(jobs_db, "_backoff", lambda attempt: 0.0)
    engine = make_engine(sqlite_url)
    calls: list[int] = []

    def locked_once(conn: sa.Connection) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise _locked()
        return "done"

    assert jobs_db.run_write(engine, locked_once) == "done" and len(calls) == 2

    def broken(conn: sa.Connection) -> None:
        calls.append(1)
        raise sa.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))

    calls.clear()
    with pytest.raises(sa.exc.IntegrityError):
        jobs_db.run_write(engine, broken)
    assert len(calls) == 1

    def always_locked(conn: sa.Connection) -> None:
        raise _locked()

    monkeypatch.setattr(jobs_db, "RETRY_TOTAL_S", 0.0)
    with pytest.raises(HaaresError, match="stayed busy for 0 s \\(database is locked\\)"):
        jobs_db.run_write(engine, always_locked)
    engine.dispose()


def test_first_open_answered_locked_is_retried(sqlite_url, monkeypatch):
    # Two processes creating one new database: SQLite can answer "database is locked" to the one that
    # loses the race to switch the file to WAL, without calling its busy handler. make_engine must open
    # again, not fail (CI hit this once); a database that stays locked still ends in one line.
    real_migrate = jobs_db.migrate
    calls: list[int] = []

    def locked_then_real(engine: sa.Engine, *, create: bool = True) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise _locked()
        return real_migrate(engine, create=create)

    monkeypatch.setattr(jobs_db, "migrate", locked_then_real)
    monkeypatch.setattr(jobs_db, "_backoff", lambda attempt: 0.0)
    engine = make_engine(sqlite_url)
    assert len(calls) == 2
    with engine.connect() as conn:
        assert schema_version(conn) == SCHEMA_VERSION
    engine.dispose()

    def always_locked(engine: sa.Engine, *, create: bool = True) -> int:
        raise _locked()

    monkeypatch.setattr(jobs_db, "migrate", always_locked)
    monkeypatch.setattr(jobs_db, "RETRY_TOTAL_S", 0.0)
    with pytest.raises(HaaresError, match="stayed busy for 0 s \\(database is locked\\)"):
        make_engine(sqlite_url)


def test_queue_processes_import_no_torch():
    code = "import sys, haares.jobs, haares.cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
