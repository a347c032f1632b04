"""Carry a queue from one short allocation to the next: `haares pack OUT.tar.gz` / `haares unpack IN.tar.gz`.

A pack is a tar.gz of a consistent snapshot of the SQLite queue database (sqlite3's online backup API,
never a file copy, so a live worker's WAL is included and nothing is torn) plus the run folders' small
files under HAARES_HOME/runs (evals.jsonl, summary.json, logs, event files); checkpoints only when asked.
Unpack restores both into a new HAARES_HOME. Owns no queue logic and runs no SQL: the snapshot, its
counts and the one rewrite (the attempts' log paths) are haares.jobs.snapshot's.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from haares import __version__
from haares.errors import HaaresError
from haares.jobs.snapshot import backup, jobs_by_status, rewrite_log_paths

MANIFEST = "haares-pack.json"
DB_NAME = "haares.db"
FORMAT = 1


@dataclass(frozen=True)
class PackSummary:
    """What went into a pack."""

    runs: int
    files: int
    bytes: int
    running: int
    """Jobs the snapshot shows running: a worker was still at work when it was taken."""

    def line(self, out: Path) -> str:
        warn = (f"; warning: {self.running} job(s) were running, the next allocation reclaims them "
                "after the lease expires" if self.running else "")
        return f"packed the queue and {self.runs} run folder(s) ({self.files} files, {self.bytes:,} bytes) into {out}{warn}"


@dataclass(frozen=True)
class UnpackSummary:
    """What an unpack restored."""

    files: int
    db_path: Path
    jobs: dict[str, int]

    def line(self) -> str:
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.jobs.items())) or "no jobs"
        return f"restored the queue to {self.db_path} ({states}) and {self.files} run file(s)"


def sqlite_path(db_url: str) -> Path:
    """The file of a sqlite:/// URL; HaaresError for any other database."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(db_url)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a user error
        raise HaaresError(f"cannot read database URL {db_url!r}: {exc}") from None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise HaaresError(f"pack and unpack carry a SQLite queue file; {db_url!r} is not one "
                          "(a PostgreSQL queue outlives the allocation by itself)")
    return Path(url.database).expanduser()


def _run_files(runs: Path, with_checkpoints: bool) -> list[Path]:
    """Regular files under `runs`, sorted; without checkpoints/ folders unless asked."""
    found = []
    for root, dirs, files in os.walk(runs):
        if not with_checkpoints and "checkpoints" in dirs:
            dirs.remove("checkpoints")
        dirs.sort()
        found += [Path(root) / f for f in sorted(files) if not f.endswith(".tmp")]
    return found


def pack(*, out: Path, db_url: str, home: Path, with_checkpoints: bool = False) -> PackSummary:
    """Write `out`: the database snapshot, a manifest, and the run folders' files (see the module doc)."""
    db = sqlite_path(db_url)
    if not db.is_file():
        raise HaaresError(f"no queue database at {db}; nothing to pack")
    runs = home / "runs"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".haares-pack-", dir=out.parent) as tmp:
        snapshot = Path(tmp) / DB_NAME
        backup(db, snapshot)
        running = jobs_by_status(snapshot).get("running", 0)
        manifest = {"format": FORMAT, "haares": __version__, "created": time.time(),
                    "runs_dir": str(runs.resolve()), "with_checkpoints": with_checkpoints}
        (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        files = _run_files(runs, with_checkpoints) if runs.is_dir() else []
        partial = Path(tmp) / "out.tar.gz"
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(Path(tmp) / MANIFEST, arcname=MANIFEST)
            tar.add(snapshot, arcname=DB_NAME)
            for path in files:
                tar.add(path, arcname=f"runs/{path.relative_to(runs).as_posix()}", recursive=False)
        os.replace(partial, out)
    run_names = {p.relative_to(runs).parts[0] for p in files}
    return PackSummary(runs=len(run_names), files=len(files), bytes=sum(p.stat().st_size for p in files),
                       running=running)


def _read_manifest(tar: tarfile.TarFile, archive: Path) -> dict:
    """The pack's manifest; HaaresError when `archive` is not a haares pack."""
    try:
        member = tar.extractfile(MANIFEST)
        manifest = json.loads(member.read()) if member else None
    except (KeyError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise HaaresError(f"{archive} is not a haares pack (no {MANIFEST} of format {FORMAT})")
    return manifest


def _run_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Members under runs/, checked to be plain files and folders that stay inside runs/."""
    members = []
    for m in tar.getmembers():
        if m.name in (MANIFEST, DB_NAME):
            continue
        parts = Path(m.name).parts
        if not parts or parts[0] != "runs" or ".." in parts or m.name.startswith("/") or not (m.isfile() or m.isdir()):
            raise HaaresError(f"{archive}: unexpected member {m.name!r}; refusing to unpack it")
        members.append(m)
    return members


def unpack(*, archive: Path, db_url: str, home: Path, force: bool = False) -> UnpackSummary:
    """Restore a pack into `home` and the database of `db_url`. Checks everything before writing anything.

    Refuses (HaaresError) a missing or foreign archive, and an existing database unless `force`; run
    files of the same name are replaced.
    """
    db = sqlite_path(db_url)
    if not archive.is_file():
        raise HaaresError(f"no pack at {archive}")
    if (db.exists() or Path(f"{db}-wal").exists()) and not force:
        raise HaaresError(f"a queue database already exists at {db}; unpack into a new HAARES_HOME or pass --force")
    try:
        tar = tarfile.open(archive, "r:gz")
    except (tarfile.TarError, OSError) as exc:
        raise HaaresError(f"cannot read {archive}: {exc}") from None
    with tar:
        try:
            manifest = _read_manifest(tar, archive)
            members = _run_members(tar, archive)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise HaaresError(f"cannot read {archive}: {exc}") from None
        db.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".haares-unpack-", dir=db.parent) as tmp:
            tar.extract(DB_NAME, tmp, filter="data")
            snapshot = Path(tmp) / DB_NAME
            rewrite_log_paths(snapshot, manifest["runs_dir"], home / "runs")
            backup(snapshot, db)
        (home / "runs").mkdir(parents=True, exist_ok=True)
        tar.extractall(home, members=members, filter="data")
    jobs = jobs_by_status(db)
    return UnpackSummary(files=sum(m.isfile() for m in members), db_path=db, jobs=jobs)
