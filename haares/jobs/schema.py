"""The queue's tables (SQLAlchemy 2.0 typed ORM). queue-design.md section 3.2 is the specification.

Vocabulary: a *job* is one run (one `run_key`, trained once whatever grids name it); `grid_runs`
links grids to jobs many-to-many with the grid's own (cell, method, seed, pair) labels; an
*attempt* is one claim of a job; *evals* are the evaluation points a run reported.
Times are naive UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 4
"""Bump it with a new function appended to haares.jobs.migrations.MIGRATIONS."""

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "held")
ATTEMPT_OUTCOMES = ("succeeded", "failed", "lost", "preempted", "cancelled")


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key-value facts about the database itself (schema version)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Job(Base):
    """One run: its resolved config, queue state, lease and latest progress."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_key: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="train")
    """train (a real training run), or a kind registered through haares.kinds (the tests' sleep)."""
    method: Mapped[str] = mapped_column(String(64))
    """Method label of the first grid that enqueued it (grid_runs holds every grid's label)."""
    seed: Mapped[int] = mapped_column(Integer)
    pair_index: Mapped[int] = mapped_column(Integer, default=0)
    method_index: Mapped[int] = mapped_column(Integer, default=0)
    config_json: Mapped[str] = mapped_column(Text)
    code_ref: Mapped[str] = mapped_column(String(80), default="")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=2)
    lost_count: Mapped[int] = mapped_column(Integer, default=0)
    max_lost: Mapped[int] = mapped_column(Integer, default=3)
    gpus_required: Mapped[int] = mapped_column(Integer, default=1)
    not_before: Mapped[datetime] = mapped_column(DateTime, server_default=text("CURRENT_TIMESTAMP"))
    lease_owner: Mapped[Optional[str]] = mapped_column(String(128))
    lease_host: Mapped[Optional[str]] = mapped_column(String(255))
    lease_pid: Mapped[Optional[int]] = mapped_column(Integer)
    lease_pid_start: Mapped[Optional[float]] = mapped_column(Float)
    """Start time of the leasing process (guards the same-host fast path against PID reuse)."""
    lease_token: Mapped[Optional[str]] = mapped_column(String(64))
    lease_expires_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    heartbeat_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    gpu: Mapped[Optional[str]] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    best_val_loss: Mapped[Optional[float]] = mapped_column(Float)
    last_val_loss: Mapped[Optional[float]] = mapped_column(Float)
    tokens_per_s: Mapped[Optional[float]] = mapped_column(Float)
    steps_per_s: Mapped[Optional[float]] = mapped_column(Float)
    progress_json: Mapped[Optional[str]] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    fresh_start: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Set by `haares retry --fresh`: the next attempt must not resume; cleared by its first eval (v2)."""
    ckpt_host: Mapped[Optional[str]] = mapped_column(String(255))
    """Host whose results home holds the job's newest checkpoint (v3); None before the first checkpoint."""
    ckpt_dir: Mapped[Optional[str]] = mapped_column(Text)
    """The run folder holding that checkpoint, as that host sees it (v3)."""
    ckpt_step: Mapped[Optional[int]] = mapped_column(Integer)
    """Step of that checkpoint (v3)."""
    note: Mapped[Optional[str]] = mapped_column(Text)
    """Something a reader of `status` should know, e.g. a restart from step 0 on another host (v3)."""
    result_json: Mapped[Optional[str]] = mapped_column(Text)
    error_summary: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=text("CURRENT_TIMESTAMP"))
    updated_at: Mapped[datetime] = mapped_column(DateTime, server_default=text("CURRENT_TIMESTAMP"))
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime)

    __table_args__ = (
        Index("ix_jobs_claim", "status", "priority", "pair_index", "method_index", "id"),
    )


# The claim's index (queue-design.md 3.4): only queued rows, in claim order (v2).
JOBS_QUEUED_INDEX = Index(
    "ix_jobs_queued",
    Job.priority.desc(),
    Job.pair_index,
    Job.method_index,
    Job.id,
    postgresql_where=Job.status == "queued",
    sqlite_where=Job.status == "queued",
)


class GridRun(Base):
    """A job's place in one grid: the grid's cell, method and seed labels."""

    __tablename__ = "grid_runs"
    grid: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True, index=True)
    cell: Mapped[str] = mapped_column(String(64), default="")
    method: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    pair_index: Mapped[int] = mapped_column(Integer)
    method_index: Mapped[int] = mapped_column(Integer)


class Attempt(Base):
    """One claim of a job: who ran it where, and how it ended."""

    __tablename__ = "attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt_no: Mapped[int] = mapped_column(Integer)
    lease_token: Mapped[str] = mapped_column(String(64))
    worker: Mapped[str] = mapped_column(String(128))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    gpu: Mapped[Optional[str]] = mapped_column(String(64))
    """The GPU the worker was bound to (`--gpu`)."""
    device_name: Mapped[Optional[str]] = mapped_column(String(255))
    """The device the training child reported using (read back from the child, not the intent)."""
    started_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    outcome: Mapped[Optional[str]] = mapped_column(String(16))
    exit_code: Mapped[Optional[int]] = mapped_column(Integer)
    error: Mapped[Optional[str]] = mapped_column(Text)
    log_path: Mapped[Optional[str]] = mapped_column(Text)
    start_step: Mapped[Optional[int]] = mapped_column(Integer)
    """The checkpoint step the attempt resumes from: jobs.ckpt_step at the claim (0 when fresh or none),
    then the step the child's own `start` event reports (lease.record_start, written on every attempt)."""
    end_step: Mapped[Optional[int]] = mapped_column(Integer)
    ckpt_dir: Mapped[Optional[str]] = mapped_column(Text)
    """Where this attempt wrote its checkpoints (on `host`) (v3)."""
    ckpt_step: Mapped[Optional[int]] = mapped_column(Integer)
    """Its newest checkpoint's step (v3)."""


class Eval(Base):
    """One evaluation point of a run (written through the fenced connection)."""

    __tablename__ = "evals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt_no: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(BigInteger)
    train_seconds: Mapped[float] = mapped_column(Float)
    """Training-clock seconds up to this step (evaluation and checkpointing excluded)."""
    val_loss: Mapped[float] = mapped_column(Float)
    val_bpb: Mapped[Optional[float]] = mapped_column(Float)
    train_loss: Mapped[Optional[float]] = mapped_column(Float)
    steps_per_s: Mapped[Optional[float]] = mapped_column(Float)
    tokens_per_s: Mapped[Optional[float]] = mapped_column(Float)
    peak_mem_bytes: Mapped[Optional[int]] = mapped_column(BigInteger)
    device: Mapped[Optional[str]] = mapped_column(String(255))

    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_evals_job_step"),)


class Worker(Base):
    """A worker process: where it runs and when it was last seen."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    gpu: Mapped[Optional[str]] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen: Mapped[datetime] = mapped_column(DateTime)
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    heartbeat_s: Mapped[Optional[float]] = mapped_column(Float)
    """This worker's heartbeat interval (v4; None for a row written before: read as the default)."""
    lease_ttl_s: Mapped[Optional[float]] = mapped_column(Float)
    """This worker's lease TTL (v4): `status` colours its jobs' heartbeat ages against it."""


class Event(Base):
    """Append-only log of state transitions (audit trail)."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[Optional[int]] = mapped_column(Integer, index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[Optional[str]] = mapped_column(Text)
