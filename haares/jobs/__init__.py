"""The job queue: SQLAlchemy schema, enqueue, claim / lease / heartbeat / finish on SQLite and PostgreSQL.

The public API (shared with the worker, see docs/queue.md) is re-exported here. No torch.
"""

from haares.jobs.admin import cancel, hold, release, retry
from haares.jobs.db import db_now, make_engine, run_write, write_tx
from haares.jobs.engine import open_engine
from haares.jobs.enqueue import EnqueueResult, enqueue_configs, enqueue_runs
from haares.jobs.handoff import foreign_checkpoints, record_checkpoint, record_restart
from haares.jobs.lease import (
    Beat,
    Lease,
    claim,
    finish,
    heartbeat,
    record_eval,
    record_start,
    set_attempt_device,
    set_attempt_log,
)
from haares.jobs.procs import pid_alive, process_start_time
from haares.jobs.reaper import reap
from haares.jobs.views import grid_labels, job_rows, state_counts
from haares.jobs.workers import register_worker, touch_worker

__all__ = [
    "Beat", "EnqueueResult", "Lease", "cancel", "claim", "db_now", "enqueue_configs", "enqueue_runs", "finish",
    "foreign_checkpoints", "grid_labels", "heartbeat", "hold", "job_rows", "make_engine", "open_engine",
    "pid_alive", "process_start_time", "reap", "record_checkpoint", "record_eval", "record_restart", "record_start", "register_worker", "release",
    "retry", "run_write", "set_attempt_device", "set_attempt_log", "state_counts", "touch_worker", "write_tx",
]
