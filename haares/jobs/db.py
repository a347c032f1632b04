"""Opening the queue database: URL checks, per-connection settings, write transactions, the clock.

`make_engine` is the only way the package opens a database; it validates the URL, refuses SQLite on a
network filesystem, and creates or migrates the schema (haares.jobs.migrations) before returning.
`write_tx` / `run_write` are the only ways to write (BEGIN IMMEDIATE on SQLite, retried on BUSY).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from haares.errors import HaaresError, first_line
from haares.jobs.migrations import (
    NO_QUEUE_YET,
    SCHEMA_VERSION,
    check_version,
    refuse_newer,
    schema_version,
    upgrade,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 3
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 5.0
RETRY_TOTAL_S = 120.0
"""BUSY / serialization retries: jittered exponential backoff 50 ms -> 5 s, for up to 2 minutes."""

# statfs f_type magic numbers of filesystems on which SQLite's locking (and WAL) is unsafe.
NETWORK_FS_MAGIC: dict[int, str] = {
    0x6969: "NFS",
    0xFF534D42: "CIFS",
    0x517B: "SMB",
    0xFE534D42: "SMB2",
    0x0BD00BD0: "Lustre",
    0x47504653: "GPFS",
    0x65735546: "FUSE",
}


def utcnow() -> datetime:
    """The process clock as a naive UTC datetime."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


clock: Callable[[], datetime] = utcnow
"""The SQLite backend's clock; tests replace it (monkeypatch) to move time forward."""


def db_now(conn: Connection) -> datetime:
    """Now, as naive UTC: PostgreSQL's clock (`now()`, so worker clock skew cannot matter), else `clock()`."""
    if conn.dialect.name == "postgresql":
        return conn.execute(sa.text("SELECT (now() AT TIME ZONE 'UTC')")).scalar_one()
    return clock()


# --- opening -------------------------------------------------------------------------------------


def make_engine(url: str, *, allow_network_fs: bool = False, read_only: bool = False, create: bool = True) -> Engine:
    """An engine for `url` with the queue's settings, its schema created or migrated.

    `url` is `sqlite:///path.db` or `postgresql://user@host[:port]/db` (mapped to psycopg).
    `create=False` refuses a database that does not exist yet instead of creating it (and its folder);
    `read_only=True` (implies create=False) opens SQLite with mode=ro and PostgreSQL sessions read-only,
    so reading commands work on a read-only results home and never create anything. An older schema is
    still upgraded where the database is writable.
    Raises HaaresError (one line) for a malformed URL, a missing, damaged or non-database file, an
    unreachable server, SQLite on a network filesystem (unless `allow_network_fs`), or a newer schema.
    """
    parsed = _parse(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    immutable = False
    while True:
        if sqlite:
            engine = _sqlite_engine(parsed, allow_network_fs=allow_network_fs, read_only=read_only,
                                    create=create and not read_only, immutable=immutable)
        else:
            engine = _pg_engine(parsed, read_only=read_only)
        # The schema step: checked (read-only), or created / migrated; the older version found or None.
        open_schema = partial(check_schema, engine) if read_only else partial(migrate, engine, create=create)
        try:
            # A first open racing another one: SQLite can answer "database is locked" while the other
            # switches the new file to WAL, without calling the busy handler; opening again succeeds.
            found = _retrying(open_schema, what="database locked at first open") if sqlite else open_schema()
            break
        except DBAPIError as exc:
            engine.dispose()
            if sqlite and read_only and not immutable and _on_read_only_fs(parsed):
                # A WAL database in a folder nobody can write needs its -shm file, which cannot be made;
                # immutable=1 reads it without one (and nothing can change it there).
                immutable = True
                continue
            raise open_error(parsed, exc) from None
        except BaseException:
            engine.dispose()
            raise
    if read_only and found is not None:
        # An older schema: upgrade it through a writable engine (a one-line error where it is read-only).
        engine.dispose()
        make_engine(url, allow_network_fs=allow_network_fs, create=False).dispose()
        return make_engine(url, allow_network_fs=allow_network_fs, read_only=True)
    return engine


def check_schema(engine: Engine) -> int | None:
    """For a read-only opening: None when the schema is current, the older version found otherwise.

    HaaresError for an empty database (no haares tables) or a newer schema.
    """
    with read_tx(engine) as conn:
        return check_version(schema_version(conn))


def migrate(engine: Engine, *, create: bool = True) -> int:
    """Create (unless not `create`) or upgrade the schema to SCHEMA_VERSION; returns the version found before."""
    with read_tx(engine) as conn:
        found = schema_version(conn)
    refuse_newer(found)
    if found == 0 and not create:
        raise HaaresError(NO_QUEUE_YET)
    if found == SCHEMA_VERSION:
        return found
    return run_write(engine, upgrade)


def _on_read_only_fs(parsed: sa.URL) -> bool:
    folder = Path(parsed.database).expanduser().parent
    return folder.is_dir() and not os.access(folder, os.W_OK)


def where(parsed: sa.URL) -> str:
    """The database as a user names it: the SQLite path, or the PostgreSQL URL without a password."""
    if parsed.get_backend_name() == "sqlite":
        return str(Path(parsed.database).expanduser())
    return parsed.render_as_string(hide_password=True).replace("postgresql+psycopg://", "postgresql://")


def open_error(parsed: sa.URL, exc: DBAPIError) -> HaaresError:
    """A one-line HaaresError for a database that opened but cannot be read or written."""
    first = first_line(exc.orig) if exc.orig is not None else type(exc).__name__
    text, place = first.lower(), where(parsed)
    if "not a database" in text:
        return HaaresError(f"{place} is not a SQLite database ({first}); pass another --db or move the file away")
    if "malformed" in text or "corrupt" in text:
        return HaaresError(f"{place} is damaged ({first}); restore it from a backup or start a new one with --db")
    read_only_folder = parsed.get_backend_name() == "sqlite" and _on_read_only_fs(parsed)
    if "readonly" in text or "read-only" in text or read_only_folder:
        return HaaresError(f"{place} is read-only here ({first}); status, report and logs can read it, "
                           "commands that change the queue need write access")
    return HaaresError(f"cannot use the database {place}: {first}")


def _parse(url: str) -> sa.URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise HaaresError(
            f"malformed database URL {url!r}: use sqlite:///path/to/file.db or postgresql://user@host/dbname"
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.drivername not in ("sqlite", "sqlite+pysqlite"):
            raise HaaresError(f"unsupported SQLite driver in {url!r}: use sqlite:///path/to/file.db")
        if not parsed.database or parsed.database == ":memory:":
            raise HaaresError(
                f"database URL {url!r} names no file; workers share the queue through a file: sqlite:///path.db"
            )
        return parsed
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        else:
            raise HaaresError(f"unsupported PostgreSQL driver in {url!r}: use postgresql://user@host/dbname")
        if not parsed.database:
            raise HaaresError(f"database URL {url!r} names no database: use postgresql://user@host/dbname")
        return parsed
    raise HaaresError(
        f"unsupported database {backend!r} in {url!r}: use sqlite:///path/to/file.db or postgresql://user@host/dbname"
    )


def fs_magic(path: Path) -> int | None:
    """The statfs f_type of the filesystem holding `path` (Linux), or None where it cannot be read."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86_64; f_type comes first
        if libc.statfs(os.fsencode(str(path)), buf) != 0:
            return None
        return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF
    except (OSError, AttributeError):
        return None


def _check_local_fs(db_path: Path, *, allow_network_fs: bool) -> None:
    probe = db_path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    magic = fs_magic(probe)
    name = NETWORK_FS_MAGIC.get(magic) if magic is not None else None
    if name and not allow_network_fs:
        raise HaaresError(
            f"{db_path} is on a network filesystem ({name}), where SQLite locking is unsafe; "
            "use --db postgresql://... for several hosts, or --allow-network-fs if you accept the risk"
        )


def _make_parent(db_path: Path) -> None:
    """Create the database's folder, or say in one line why it cannot be."""
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [db_path.parent, *db_path.parent.parents] if p.exists() and not p.is_dir()),
                       db_path.parent)
        raise HaaresError(f"cannot create the database {db_path}: {blocker} is a file, not a folder") from None
    except OSError as exc:
        raise HaaresError(f"cannot create the folder {db_path.parent} for the database: {exc.strerror}") from None


def _sqlite_engine(
    parsed: sa.URL, *, allow_network_fs: bool, read_only: bool, create: bool, immutable: bool = False
) -> Engine:
    db_path = Path(parsed.database).expanduser()
    _check_local_fs(db_path, allow_network_fs=allow_network_fs)
    if db_path.is_dir():
        raise HaaresError(f"the database path {db_path} is a folder; name a file, e.g. sqlite:///{db_path}/haares.db")
    if not create and not db_path.is_file():
        raise HaaresError(f"no database at {db_path}: nothing was enqueued there yet "
                          "(`haares enqueue --grid NAME` creates it), or pass --db / HAARES_DB")
    if create:
        _make_parent(db_path)
    if read_only:
        # mode=ro never creates the file or takes the write lock; the percent-quoting keeps odd paths intact.
        query = {"mode": "ro", "uri": "true"} | ({"immutable": "1"} if immutable else {})
        engine = sa.create_engine(parsed.set(database=f"file:{quote(str(db_path))}", query=query))
    else:
        engine = sa.create_engine(parsed.set(database=str(db_path)))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI objects
        # Disable pysqlite's own BEGIN handling: we issue BEGIN / BEGIN IMMEDIATE ourselves.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if read_only:
            cur.execute("PRAGMA query_only=1")
        else:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front, so no transaction ever upgrades a read lock
        # (the upgrade is what returns "database is locked" despite busy_timeout).
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("haares_write") else "BEGIN")

    return engine


def _pg_engine(parsed: sa.URL, *, read_only: bool = False) -> Engine:
    options = "-c timezone=UTC -c statement_timeout=10000 -c idle_in_transaction_session_timeout=60000"
    if read_only:
        options += " -c default_transaction_read_only=on"
    engine = sa.create_engine(
        parsed,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": PG_CONNECT_TIMEOUT_S,
            "options": options,
        },
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except DBAPIError as exc:
        engine.dispose()
        first = first_line(exc.orig) if exc.orig is not None else type(exc).__name__
        raise HaaresError(f"cannot connect to PostgreSQL at {where(parsed)}: {first}") from None
    return engine


# --- transactions --------------------------------------------------------------------------------


def is_retryable(exc: BaseException) -> bool:
    """SQLite BUSY/locked, PostgreSQL serialization failure or deadlock, or a dropped connection."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in ("40001", "40P01"):
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


def _backoff(attempt: int) -> float:
    return min(RETRY_MAX_S, RETRY_FIRST_S * 2**attempt) * random.uniform(0.5, 1.5)


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """One short write transaction: BEGIN IMMEDIATE on SQLite (the write lock is taken at BEGIN, so
    BUSY can only happen there, and it is retried with jittered backoff); commit on success.

    To retry a whole body on PostgreSQL serialization/deadlock errors too, use `run_write`.
    """
    conn = _retrying(lambda: _begin_write(engine), what="database busy at BEGIN")
    try:
        yield conn
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


def _begin_write(engine: Engine) -> Connection:
    """A connection with its write transaction begun (closed again if BEGIN fails)."""
    conn = engine.connect().execution_options(haares_write=True)
    try:
        conn.begin()
    except BaseException:
        conn.close()
        raise
    return conn


def run_write(engine: Engine, body: Callable[[Connection], T]) -> T:
    """Run `body(conn)` in a write transaction, re-running it whole on retryable errors (backoff, 2 min)."""

    def once() -> T:
        with write_tx(engine) as conn:
            return body(conn)

    return _retrying(once, what="retryable database error")


def _retrying(action: Callable[[], T], *, what: str) -> T:
    """`action()`, called again after a jittered backoff while it raises a retryable error (is_retryable);
    HaaresError once RETRY_TOTAL_S have passed. The one retry loop of the package's writes."""
    start = time.monotonic()
    attempt = 0
    while True:
        try:
            return action()
        except DBAPIError as exc:
            if not is_retryable(exc):
                raise
            if time.monotonic() - start > RETRY_TOTAL_S:
                raise _busy_error(exc) from None
            log.info("%s (attempt %d), retrying: %s", what, attempt + 1, first_line(exc.orig or exc))
            time.sleep(_backoff(attempt))
            attempt += 1


def _busy_error(exc: DBAPIError) -> HaaresError:
    return HaaresError(
        f"the database stayed busy for {RETRY_TOTAL_S:.0f} s ({first_line(exc.orig or exc)}); "
        "check for a process holding a long transaction"
    )


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction (a deferred BEGIN on SQLite: readers never block the writer in WAL)."""
    with engine.connect() as conn:
        try:
            yield conn
        finally:
            conn.rollback()
