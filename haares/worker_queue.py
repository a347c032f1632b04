"""The worker's side of the queue: claims for this host, the fenced writes its children's events call for,
lease renewals and the final record. Everything the worker writes goes through haares.jobs from here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine

from haares.checkpoint_names import newest_step
from haares.errors import one_line
from haares.jobs import (
    Lease,
    claim,
    finish,
    foreign_checkpoints,
    grid_labels,
    heartbeat,
    process_start_time,
    record_checkpoint,
    record_eval,
    record_start,
    set_attempt_device,
    set_attempt_log,
)
from haares.kinds import job_kind
from haares.protocol import EventType
from haares.settings import runs_dir
from haares.worker_child import Running

log = logging.getLogger("haares.worker")


def run_dir_for(run_key: str) -> Path:
    """The run directory: stable per run key (checkpoints survive attempts), under HAARES_HOME."""
    return runs_dir() / run_key


def handoff_note(lease: Lease, *, host: str, grace_s: float) -> str | None:
    """Why this attempt cannot resume where the job stopped (its checkpoint is on a host whose files
    this one cannot read), or None when it can (docs/worker.md, "Several hosts")."""
    step = lease.ckpt_step or 0
    if not job_kind(lease.kind).resumes or lease.fresh or step <= 0:
        return None
    here = newest_step(run_dir_for(lease.run_key))
    if here >= step:
        return None
    if lease.ckpt_host == host:
        # Same host name, file gone: a machine that came back bare (a new allocation, a preemptible
        # instance) with the queue but not the checkpoints. No grace period applied: the claim rule
        # treats this host's own checkpoints as readable.
        return (f"the checkpoint at step {step} recorded on this host ({lease.ckpt_dir}) is not there now "
                f"(the queue came back without it?); restarted from step {here}")
    return (f"the checkpoint at step {step} is on host {lease.ckpt_host} ({lease.ckpt_dir}), not readable on {host}; "
            f"after waiting {grace_s:g} s for that host, restarted from step {here}")


def claim_next(engine: Engine, *, worker_id: str, host: str, pid: int, gpu: str, lease_ttl_s: float,
               kinds: tuple[str, ...], ckpt_grace_s: float, job_ids: list[int] | None = None) -> Lease | None:
    """Claim the next job this worker may run (haares.jobs.claim), or None.

    A job whose checkpoint another host recorded waits for that host (ckpt_grace_s) unless this host's
    results home holds that checkpoint too.
    """
    readable = tuple(job_id for job_id, run_key, step in foreign_checkpoints(engine=engine, host=host)
                     if newest_step(run_dir_for(run_key)) >= step)
    return claim(engine=engine, worker_id=worker_id, host=host, pid=pid, pid_start=process_start_time(pid), gpu=gpu,
                 lease_ttl_s=lease_ttl_s, kinds=kinds, ckpt_grace_s=ckpt_grace_s, readable=readable, job_ids=job_ids)


def run_labels_json(engine: Engine, job_id: int) -> str:
    """The job's grid names as JSON for the child's TensorBoard tree; "[]" if the read fails (names only)."""
    try:
        return json.dumps(grid_labels(engine=engine, job_id=job_id))
    except Exception as exc:  # noqa: BLE001 - curves still land in the run dir, just unnamed
        log.warning("grid labels of job %s unreadable: %s", job_id, one_line(exc))
        return "[]"


def _write_start(engine: Engine, r: Running, fields: dict, host: str) -> bool | None:
    # Written even when it equals the claim's start_step: record_restart may have changed the attempt's
    # start_step since the claim (to this host's newest file), and the child's own step is the truth.
    return record_start(engine=engine, lease=r.lease, step=r.step)


def _write_checkpoint(engine: Engine, r: Running, fields: dict, host: str) -> bool | None:
    if r.checkpoint_step is None:
        return None
    return record_checkpoint(engine=engine, lease=r.lease, host=host, step=int(r.checkpoint_step),
                             ckpt_dir=str(run_dir_for(r.lease.run_key)))


def _write_device(engine: Engine, r: Running, fields: dict, host: str) -> bool | None:
    return set_attempt_device(engine=engine, lease=r.lease, device_name=r.device_name or "")


def _write_eval(engine: Engine, r: Running, fields: dict, host: str) -> bool | None:
    return record_eval(engine=engine, lease=r.lease, point=dict(fields.get("point") or {}))


EVENT_WRITES: dict[EventType, Callable[[Engine, Running, dict, str], bool | None]] = {
    EventType.START: _write_start,
    EventType.CHECKPOINT: _write_checkpoint,
    EventType.DEVICE: _write_device,
    EventType.EVAL: _write_eval,
}
"""The events the queue keeps, and the fenced write each calls for (after Running.apply); others: none."""


def record_event(engine: Engine, r: Running, event: EventType, fields: dict, *, host: str) -> None:
    """The fenced write `event` calls for, if any; a False answer (lease gone) sets r.lost; DB errors are logged."""
    write = EVENT_WRITES.get(event)
    if write is None or r.lost:
        return
    try:
        ok = write(engine, r, fields, host)
    except Exception as exc:  # noqa: BLE001 - a DB hiccup must not kill the worker
        log.warning("job %s: recording %s failed: %s", r.job_id, event.value, one_line(exc))
        return
    if ok is False:
        r.lost = True


def record_log_path(engine: Engine, r: Running) -> None:
    """Record where the child's log is (fenced: False sets r.lost); a DB error is logged, never raised."""
    try:
        ok = set_attempt_log(engine=engine, lease=r.lease, log_path=str(r.log_path))
    except Exception as exc:  # noqa: BLE001 - an informational column; never worth a crash
        log.warning("job %s: could not record its log path: %s", r.job_id, one_line(exc))
        return
    if ok is False:
        r.lost = True


def renew(engine: Engine, r: Running, *, lease_ttl_s: float) -> None:
    """One heartbeat for `r`: on success note the time (and a cancel request); flag r.lost if the lease is gone."""
    try:
        beat = heartbeat(engine=engine, lease=r.lease, lease_ttl_s=lease_ttl_s, progress=r.progress())
    except Exception as exc:  # noqa: BLE001 - any DB failure: keep training; the worker's police times it
        log.warning("heartbeat for job %s failed (%.1f s without a renewal): %s",
                    r.job_id, time.monotonic() - r.last_beat_ok, one_line(exc))
        return
    if not beat.alive:
        r.lost = True
        return
    r.last_beat_ok = time.monotonic()
    if beat.cancel_requested:
        r.cancel = True


def record_finish(engine: Engine, r: Running, finish_kwargs: dict) -> bool | None:
    """haares.jobs.finish with three tries: True recorded, False fenced out, None the database never answered."""
    for attempt in range(3):
        try:
            return bool(finish(engine=engine, lease=r.lease, **finish_kwargs))
        except Exception as exc:  # noqa: BLE001 - DB down: the lease expires and a reaper requeues
            log.warning("job %s: finish(%s) failed (try %d): %s", r.job_id, finish_kwargs["outcome"], attempt + 1,
                        one_line(exc))
            time.sleep(0.5 * (attempt + 1))
    return None
