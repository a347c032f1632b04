"""Shared fixtures. Sets offline and results-home variables before anything imports `datasets`, and
Triton's interpreter mode before anything imports triton."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import uuid

# Read at import time by datasets/huggingface_hub: a hub miss must fail at once, not retry for 23 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# The router's Triton kernels run on the CPU only in Triton's interpreter, which triton reads when it
# is first imported (torch imports it lazily, e.g. for a compile), so it is set before any test runs.
os.environ.setdefault("TRITON_INTERPRET", "1")
_SESSION_HOME = tempfile.mkdtemp(prefix="haares-test-home-")
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)  # one per pytest run; they piled up in /tmp
os.environ.setdefault("HF_HOME", os.path.join(_SESSION_HOME, "hf"))
os.environ["HAARES_HOME"] = _SESSION_HOME
os.environ.pop("HAARES_DB", None)
# Tiny models on a 2-core machine shared by several test processes: one thread each is far faster
# than oversubscribed thread pools (a tiny step measured 0.06 s vs 0.6 s). Inherited by children.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402

# The test-only `sleep` job kind (production ships `train` only): registered here for in-process workers
# and claims, and through HAARES_KINDS_FILE for the `haares worker` processes tests start.
from fixtures import sleep_kind  # noqa: E402

os.environ["HAARES_KINDS_FILE"] = sleep_kind.__file__


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread for torch in this process (if a test loaded torch): fast on 2 shared cores,
    and the same numerics as the single-threaded child processes that bitwise comparisons run."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh HAARES_HOME for one test."""
    monkeypatch.setenv("HAARES_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A fresh SQLite database file."""
    return f"sqlite:///{tmp_path / 'queue.db'}"


def _pg_reachable(url: str) -> str | None:
    try:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _admin(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture(scope="session")
def pg_server_url():
    """A private database on the server of HAARES_TEST_PG_URL, dropped at the end of the session.

    Private, so two test runs sharing one server (or one developer's run beside CI) never drop each
    other's tables. Skipped without the variable; fails instead under HAARES_REQUIRE_PG=1.
    """
    url = os.environ.get("HAARES_TEST_PG_URL")
    required = os.environ.get("HAARES_REQUIRE_PG") == "1"
    if not url:
        if required:
            pytest.fail("HAARES_REQUIRE_PG=1 but HAARES_TEST_PG_URL is not set")
        pytest.skip("HAARES_TEST_PG_URL not set")
    problem = _pg_reachable(url)
    if problem:
        if required:
            pytest.fail(f"HAARES_REQUIRE_PG=1 but PostgreSQL at {url} is unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    from sqlalchemy.engine import make_url

    name = f"haares_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    _admin(url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_server_url, request) -> str:
    """A fresh, empty PostgreSQL schema-per-test database URL (drops every haares table first)."""
    import sqlalchemy as sa

    from haares.jobs.schema import Base

    url = pg_server_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
    engine.dispose()
    return pg_server_url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """Both backends: a fresh SQLite file, and the (emptied) PostgreSQL test database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queue.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `haares ARGS...` in-process through the console entry point; returns (exit code, stdout, stderr)."""
    from haares.cli.app import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["haares", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run
