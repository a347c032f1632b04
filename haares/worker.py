"""The worker: claims jobs, runs each in a child process, heartbeats, and records what the child reports.

The one module that knows both the queue database and the training side, yet it imports no torch:
training runs in child processes (haares.worker_child; one per claimed job, up to `slots` at once),
which report over the protocol of haares.protocol. This parent owns the database connection, the
heartbeat thread and signal handling (queue-design.md 3.1), so a hung training loop can never starve
the lease. Every write goes through the queue API (haares.jobs), fenced by the lease after the claim;
once a lease is lost, nothing more is written for that job and its child is killed. How an attempt
ended is the pure haares.outcome.outcome_of.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import secrets
import signal
import threading
import time

from sqlalchemy.engine import Engine

from haares import __version__
from haares.checkpoint_names import newest_step
from haares.errors import HaaresError, one_line
from haares.jobs import (
    Lease,
    finish,
    open_engine,
    reap,
    record_restart,
    register_worker,
    touch_worker,
)
from haares.kinds import JOB_KINDS, job_kind, load_kinds_files, total_steps
from haares.outcome import outcome_of, slots_after_out_of_memory
from haares.protocol import EXIT_DEVICE, EventType
from haares.settings import host_name, runs_dir
from haares.worker_child import EventItem, Running, child_env, last_log_line, start_running
from haares.worker_options import WorkerOptions, check_gpu_visible, parse_gpu, visible_gpu_count
from haares.worker_queue import (
    claim_next,
    handoff_note,
    record_event,
    record_finish,
    record_log_path,
    renew,
    run_dir_for,
    run_labels_json,
)
from haares.worker_report import QuietReporter, Reporter, WorkerSummary

__all__ = ["QuietReporter", "Reporter", "Running", "Worker", "WorkerOptions", "WorkerSummary", "check_gpu_visible",
           "parse_gpu", "run_worker", "visible_gpu_count"]

log = logging.getLogger("haares.worker")

_TICK_S = 0.2  # main-loop wake-up when no child event arrives; bounds signal and kill latency


class Worker:
    """One worker process's state. Use `run_worker` unless a test needs the pieces."""

    def __init__(self, *, engine: Engine, options: WorkerOptions, reporter: Reporter | None = None) -> None:
        self.engine = engine
        self.opt = options
        self.kinds = options.kinds if options.kinds is not None else tuple(JOB_KINDS)
        self.reporter: Reporter = reporter or QuietReporter()
        # HAARES_HOST names this host where several share one hostname (containers, tests).
        self.host = host_name()
        self.pid = os.getpid()
        self.worker_id = f"{self.host}:{self.pid}:{secrets.token_hex(3)}"
        self.summary = WorkerSummary(self.worker_id)
        self.running: dict[int, Running] = {}
        self.lock = threading.Lock()
        self.events: queue.Queue[tuple[Running, EventItem]] = queue.Queue()
        self.stop_requests = 0
        self.stop_signal: str | None = None
        self.done = threading.Event()
        self._last_reap = float("-inf")
        self._stops_announced = 0
        self.deadline = options.deadline()
        self._unfit_announced = False
        self.slots = options.slots  # at most this many children at once: --slots, less one per shared-GPU OOM

    def run(self) -> WorkerSummary:
        """Register, then claim / run / record until the queue is empty (or forever with wait)."""
        register_worker(engine=self.engine, worker_id=self.worker_id, host=self.host, pid=self.pid, gpu=self.opt.gpu,
                        version=__version__, heartbeat_s=self.opt.heartbeat_s, lease_ttl_s=self.opt.lease_ttl_s)
        old_handlers = self._install_signals()
        threading.Thread(target=self._heartbeat_loop, name="haares-heartbeat", daemon=True).start()
        self._maybe_reap(force=True)
        queue_empty, next_poll = False, 0.0
        try:
            while True:
                now = time.monotonic()
                if self._may_claim() and now >= next_poll:
                    queue_empty = not self._try_fill()
                    # A miss may hide expired leases: reap, and claim again if that freed anything.
                    if queue_empty and self._maybe_reap(force=True):
                        queue_empty = not self._try_fill()
                    if queue_empty:
                        next_poll = now + self.opt.poll_s * random.uniform(0.8, 1.2)
                if not self.running and (self.stop_requests or self._claim_limit_hit()
                                         or (queue_empty and not self.opt.wait)):
                    break
                self._drain_events(_TICK_S)
                self._check_deadline()
                self._police()
                if self._collect_exits():
                    next_poll = 0.0  # re-poll at once after a completion
                self.reporter.tick(list(self.running.values()))
                self._maybe_reap()
        finally:
            self.done.set()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self._touch(draining=True)
        self.summary.stopped_by = self.stop_signal
        return self.summary

    # --- signals and the time limit ----------------------------------------------------------

    def request_stop(self, signame: str) -> None:
        """First call: preempt (SIGTERM children, hand jobs back). Second: kill children now.

        SIGUSR1 (Slurm's warning) never escalates: under srun it arrives twice, from the script's
        trap and from slurmstepd signalling every process of the step.
        """
        if signame == "SIGUSR1" and self.stop_requests:
            return
        self.stop_requests += 1
        self.stop_signal = self.stop_signal or signame

    def _install_signals(self) -> dict:
        old: dict = {}
        if threading.current_thread() is not threading.main_thread():
            return old
        # SIGUSR1: Slurm's warning before the time limit (`--signal=B:USR1@S`, forwarded by the script).
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            old[sig] = signal.getsignal(sig)
            signal.signal(sig, lambda signum, _frame: self.request_stop(signal.Signals(signum).name))
        return old

    def _preempt_grace(self, now: float) -> float:
        """SIGTERM to SIGKILL on preemption: --grace, cut so that children are gone 2 s before a time limit."""
        if self.deadline is None:
            return self.opt.grace_s
        return max(1.0, min(self.opt.grace_s, self.deadline.remaining(now) - 2.0))

    def _check_deadline(self) -> None:
        """At the time limit's checkpoint margin, stop as on SIGTERM (children checkpoint, jobs go back)."""
        if self.deadline is not None and not self.stop_requests and self.deadline.preempt_due():
            self.request_stop("time limit")

    # --- heartbeat (its own thread) ----------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        """Renew every running lease each heartbeat_s; flag lost leases, cancels and DB outages."""
        beats = 0
        while not self.done.wait(self.opt.heartbeat_s):
            beats += 1
            with self.lock:
                snapshot = [r for r in self.running.values() if not r.lost and r.exited_at is None]
            for r in snapshot:
                renew(self.engine, r, lease_ttl_s=self.opt.lease_ttl_s)
            if beats % 5 == 0:  # last_seen is informational: spare the write lock
                self._touch(draining=self.stop_requests > 0)

    def _touch(self, *, draining: bool) -> None:
        try:
            touch_worker(engine=self.engine, worker_id=self.worker_id, draining=draining)
        except Exception as exc:  # noqa: BLE001 - the worker row is informational only
            log.debug("worker row update failed: %s", one_line(exc))

    # --- claiming and starting children ------------------------------------------------------

    def _claim_limit_hit(self) -> bool:
        return self.opt.max_jobs is not None and self.summary.claimed >= self.opt.max_jobs

    def _may_claim(self) -> bool:
        return not self.stop_requests and not self._claim_limit_hit() and len(self.running) < self.slots

    def _try_fill(self) -> bool:
        """_fill_slots, with DB trouble reported and treated as an empty queue (polled again later)."""
        try:
            return self._fill_slots()
        except HaaresError:
            raise
        except Exception as exc:  # noqa: BLE001
            self.reporter.message(f"claim failed: {one_line(exc)}")
            return False

    def _fill_slots(self) -> bool:
        """Claim and start children until the slots are full; False when the queue had nothing claimable."""
        while self._may_claim():
            lease = self._claim_one()
            if lease is None:
                return False
            self.summary.claimed += 1
            note = handoff_note(lease, host=self.host, grace_s=self.opt.checkpoint_grace_s)
            if note:
                self.reporter.message(f"job {lease.job_id}: {note}")
                record_restart(engine=self.engine, lease=lease, note=note,
                               start_step=newest_step(run_dir_for(lease.run_key)))
            try:
                r = self._start(lease, note)
            except OSError as exc:
                finish(engine=self.engine, lease=lease, outcome="failed",
                       error=f"could not start the child: {one_line(exc)}")
                self.summary.add("failed")
                continue
            with self.lock:
                self.running[r.job_id] = r
            record_log_path(self.engine, r)
            self.reporter.started(r)
        return True

    def _claim_one(self) -> Lease | None:
        return claim_next(self.engine, worker_id=self.worker_id, host=self.host, pid=self.pid, gpu=self.opt.gpu,
                          lease_ttl_s=self.opt.lease_ttl_s, kinds=self.kinds,
                          ckpt_grace_s=self.opt.checkpoint_grace_s, job_ids=self._fitting())

    def _fitting(self) -> list[int] | None:
        """Under a time limit, the claim's `job_ids`: the queued jobs that can finish in time; else None."""
        if self.deadline is None:
            return None
        from haares.timelimit import claimable_ids

        ids, unfit = claimable_ids(engine=self.engine, deadline=self.deadline, kinds=self.kinds,
                                   runs_dir=runs_dir(), worker=self.worker_id)
        if unfit and not ids and not self._unfit_announced:
            self._unfit_announced = True
            self.reporter.message(f"time limit: {unfit} queued job(s) cannot finish in the "
                                  f"{self.deadline.remaining():.0f} s left; not claiming them")
        return ids

    def _start(self, lease: Lease, note: str | None) -> Running:
        """Start the child of `lease`; its events arrive on self.events, tagged with its Running."""
        run_dir = run_dir_for(lease.run_key)
        env = child_env(lease, gpu=self.opt.gpu, slots=self.opt.slots, run_dir=run_dir, parent_pid=self.pid,
                        labels_json=run_labels_json(self.engine, lease.job_id))
        return start_running(lease, argv=job_kind(lease.kind).argv(lease.config_json), env=env, note=note,
                             log_path=run_dir / "logs" / f"attempt-{lease.attempt_no}.log",
                             total_steps=total_steps(lease.kind, lease.config_json), events=self.events)

    # --- child events ------------------------------------------------------------------------

    def _drain_events(self, timeout: float) -> None:
        """Wait up to `timeout` for a child event (the loop's only sleep), then handle all queued ones."""
        try:
            r, item = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        self._handle_event(r, item)
        self._drain_pending_events()

    def _drain_pending_events(self) -> None:
        while True:
            try:
                r, item = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle_event(r, item)

    def _handle_event(self, r: Running, item: EventItem) -> None:
        """Update `r` from one event, then record what the queue keeps (fenced; nothing once the lease is lost)."""
        if item is None:
            r.eof = True
            return
        event, fields = item
        r.apply(event, fields)
        if event is EventType.START and r.step < (r.lease.ckpt_step or 0) and not r.lease.fresh:
            self.reporter.message(f"job {r.job_id}: restarting from step {r.step}: no checkpoint of step "
                                  f"{r.lease.ckpt_step} here (it did not travel with the queue?)")
        record_event(self.engine, r, event, fields, host=self.host)

    # --- stopping and finishing children -------------------------------------------------------

    def _police(self) -> None:
        """Act on flags: lost lease, cancel, DB outage, worker stop; SIGKILL past deadlines."""
        now = time.monotonic()
        with self.lock:
            children = list(self.running.values())
        self._announce_stop(len(children), now)
        for r in children:
            # Timed here, not in the heartbeat thread: a heartbeat stuck on a dead connection or a
            # held lock never returns an error to count.
            if not r.lost and not r.db_down and now - r.last_beat_ok >= 0.8 * self.opt.lease_ttl_s:
                r.db_down = True
                self.reporter.message(f"job {r.job_id}: no lease renewal for {now - r.last_beat_ok:.1f} s "
                                      "(database unreachable?); checkpointing and stopping the child")
            if r.lost:
                if r.stop_reason != "lost":
                    self.reporter.message(f"job {r.job_id}: lease lost (another worker owns it); "
                                          "stopping the child, writing nothing more")
                    r.stop_reason = "lost"
                r.stop("lost", self.opt.lost_grace_s)
            elif r.cancel:
                r.stop("cancel", self.opt.grace_s)
            elif r.db_down:
                r.stop("db_down", self.opt.grace_s)
            elif self.stop_requests:
                r.stop("preempt", self._preempt_grace(now))
            if self.stop_requests > 1 and r.child.poll() is None:
                r.kill_at = now  # second Ctrl-C: no more grace
            r.kill_if_due(now)

    def _announce_stop(self, children: int, now: float) -> None:
        """Say once per stop request what happens next (here, not in the signal handler: printing is unsafe there)."""
        if self.stop_requests == self._stops_announced:
            return
        self._stops_announced = self.stop_requests
        if self.stop_requests == 1:
            self.reporter.message(f"{self.stop_signal}: no new jobs; {children} child(ren) checkpoint and hand their "
                                  f"jobs back (up to {self._preempt_grace(now):.0f} s); Ctrl-C again to kill them")
        else:
            self.reporter.message("killing the children now; their jobs go back to the queue")

    def _collect_exits(self) -> bool:
        """Finalize children that exited (after their last event). True if any finished."""
        finished = False
        with self.lock:
            children = list(self.running.values())
        for r in children:
            if r.eof and r.child.poll() is None:
                r.child.wait(0.5)  # EOF on the pipe means the child is exiting; the exit status follows within ms
            if r.child.poll() is None:
                continue
            if r.exited_at is None:
                r.exited_at = time.monotonic()
            # Wait for EOF so the result event is not lost; a grandchild holding the pipe open
            # must not hold the job forever, hence the 5 s cap.
            if r.eof or time.monotonic() - r.exited_at > 5.0:
                self._drain_pending_events()
                self._finalize(r)
                finished = True
        return finished

    def _finalize(self, r: Running) -> None:
        """Record a finished child (unless fenced out) and forget it."""
        code = r.child.poll()
        others = len(self.running) - 1  # the worker's children share one GPU (--gpu); a len() needs no lock
        ended = outcome_of(code, result=r.result, error=r.error, stop_reason=r.stop_reason,
                           preempted_step=r.preempted_step, checkpoint_step=r.checkpoint_step,
                           last_log_line=last_log_line(r.log_path), device_shared_with=others)
        outcome, wrote = ("lost", None) if r.lost else self._record(r, ended.finish_kwargs())
        with self.lock:
            self.running.pop(r.job_id, None)
        if code == EXIT_DEVICE and not self.stop_requests:
            # The device this worker promised is not there: claiming more would only fail them too.
            self.reporter.message(f"job {r.job_id}: {r.error or 'device mismatch'}; this worker stops claiming")
            self.request_stop("device mismatch")
        slots = slots_after_out_of_memory(code, slots=self.slots, shared_with=others)
        if slots != self.slots:
            self.slots = slots
            self.reporter.message(f"job {r.job_id}: CUDA out of memory beside {others} other run(s); requeued "
                                  f"without using a retry, and this worker now runs at most {self.slots} at once")
        self.summary.add(outcome)
        self.reporter.finished(r, outcome, bool(wrote))

    def _record(self, r: Running, finish_kwargs: dict) -> tuple[str, bool | None]:
        """Record the end; (the outcome as this worker saw it, True / False fenced out / None no DB)."""
        outcome = finish_kwargs["outcome"]
        wrote = record_finish(self.engine, r, finish_kwargs)
        if wrote is False:
            self.reporter.message(f"job {r.job_id}: lease lost before its {outcome} end could be recorded; "
                                  "another worker owns it, nothing written")
            return "lost", wrote
        if wrote is None:
            self.reporter.message(f"job {r.job_id}: could not record {outcome}; the reaper will requeue it")
            return "unrecorded", wrote
        return outcome, wrote

    def _maybe_reap(self, *, force: bool = False) -> int:
        """Requeue expired leases (and dead same-host workers' jobs); at most every reap_every_s."""
        now = time.monotonic()
        if not force and now - self._last_reap < self.opt.reap_every_s:
            return 0
        self._last_reap = now
        try:
            n = reap(engine=self.engine, host=self.host)
        except Exception as exc:  # noqa: BLE001 - reaping is best effort; any process may do it
            log.warning("reap failed: %s", one_line(exc))
            return 0
        if n:
            self.reporter.message(f"reclaimed {n} job(s) with expired leases or dead workers")
        return n


def run_worker(*, db_url: str, options: WorkerOptions, reporter: Reporter | None = None) -> WorkerSummary:
    """Load HAARES_KINDS_FILE's kinds, open the database (HaaresError if unusable), run a worker until done."""
    check_gpu_visible(options.gpu)
    load_kinds_files()
    with open_engine(db_url) as engine:
        return Worker(engine=engine, options=options, reporter=reporter).run()
