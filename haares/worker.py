"""The worker: claims jobs, runs each in a child process, heartbeats, and writes what the child reports.

The one module that knows both the queue database and the training side, yet it imports no torch:
training runs in `haares.child` processes (one per claimed job, up to `slots` at once). This parent
owns the database connection, the heartbeat thread and signal handling (queue-design.md 3.1), so a
hung training loop can never starve the lease. Every write after the claim goes through the fenced
queue API; once a lease is lost, nothing more is written for that job and its child is killed.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from haares import __version__, child
from haares.errors import HaaresError
from haares.settings import host_name, runs_dir

log = logging.getLogger("haares.worker")

_GPU_SPEC = re.compile(r"^\d+(,\d+)*$")
_TICK_S = 0.2  # main-loop wake-up when no child event arrives; bounds signal and kill latency


def parse_gpu(spec: str) -> str:
    """Normalise a `--gpu` value: "cpu" or comma-separated GPU indices ("0", "0,1").

    The result is what the child's CUDA_VISIBLE_DEVICES is set to ("" for cpu) and what the
    attempt records as its gpu. Anything else raises HaaresError.
    """
    text = spec.strip().lower()
    if text == "cpu":
        return "cpu"
    if _GPU_SPEC.match(text):
        return ",".join(str(int(part)) for part in text.split(","))
    raise HaaresError(f"--gpu must be 'cpu' or GPU indices such as 0 or 0,1; got {spec!r}")


def visible_gpu_count() -> int:
    """How many CUDA devices a child can be bound to here, as torch in a fresh process counts them.

    A subprocess, because the worker itself never imports torch; CUDA_VISIBLE_DEVICES is removed since
    the worker sets it per child. 0 when torch has no CUDA or the probe fails. Tests monkeypatch this.
    """
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return 0


def check_gpu_visible(gpu: str) -> None:
    """Refuse (HaaresError) a normalised --gpu naming a GPU this host does not have; "cpu" always passes."""
    if gpu == "cpu":
        return
    count = visible_gpu_count()
    missing = [i for i in gpu.split(",") if int(i) >= count]
    if missing:
        seen = f"{count} GPU(s), indices 0 to {count - 1}" if count else "no CUDA GPU (or a CPU-only torch build)"
        raise HaaresError(f"--gpu {gpu}: this host has no GPU {', '.join(missing)}; torch sees {seen}. "
                          "Use --gpu cpu, or see the README for a CUDA build of torch")


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker runs. Times are seconds; tests scale the defaults by about 1/100."""

    gpu: str
    """Normalised --gpu value (see parse_gpu)."""
    slots: int = 1
    """Children (each its own claimed job) at once on the one device."""
    max_jobs: int | None = None
    """Stop claiming after this many claims (--once is 1); None: no limit."""
    wait: bool = False
    """Keep polling an empty queue instead of exiting."""
    heartbeat_s: float = 30.0
    lease_ttl_s: float = 180.0
    poll_s: float = 10.0
    """Idle claim poll; each wait is jittered by +-20%."""
    grace_s: float = 120.0
    """SIGTERM to SIGKILL, for preemption and cancellation."""
    lost_grace_s: float = 5.0
    """SIGTERM to SIGKILL for a child whose lease was taken over (another attempt may be running)."""
    kinds: tuple[str, ...] = ("train", "sleep")
    time_limit_s: float | None = None
    """--time-limit: claim only what can finish, preempt every child checkpoint_margin_s before it."""
    checkpoint_margin_s: float | None = None
    """None: haares.timelimit.default_margin (60 s, at most a fifth of the limit)."""
    claim_fraction: float = 0.5
    """Under a time limit, a job with no time estimate is claimed only while more than this fraction remains."""
    checkpoint_grace_s: float = 600.0
    """How long a job whose checkpoint another host holds waits for that host before this one restarts it."""

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise HaaresError(f"--slots must be at least 1, got {self.slots}")
        if self.max_jobs is not None and self.max_jobs < 1:
            raise HaaresError(f"--max-jobs must be at least 1, got {self.max_jobs}")
        if self.heartbeat_s <= 0 or self.lease_ttl_s < 2 * self.heartbeat_s:
            raise HaaresError(
                f"--lease-ttl ({self.lease_ttl_s:g} s) must be at least twice --heartbeat ({self.heartbeat_s:g} s), "
                "and both positive; the defaults are 180 and 30"
            )
        if self.poll_s <= 0:
            raise HaaresError(f"--poll must be positive, got {self.poll_s:g}")
        if self.time_limit_s is not None:
            self.deadline()  # validates the margin and fraction against the limit

    def deadline(self) -> Any:
        """A fresh haares.timelimit.Deadline starting now, or None without --time-limit."""
        if self.time_limit_s is None:
            return None
        from haares.timelimit import Deadline, default_margin

        margin = self.checkpoint_margin_s
        return Deadline(self.time_limit_s, default_margin(self.time_limit_s) if margin is None else margin,
                        self.claim_fraction)

    @property
    def reap_every_s(self) -> float:
        """Reaper period: 60 s by default, a third of the TTL when that is shorter."""
        return min(60.0, self.lease_ttl_s / 3)


@dataclass
class Running:
    """One child and what the parent knows about it. Mutated by the main loop; flags by the heartbeat."""

    lease: Any
    proc: subprocess.Popen
    log_path: Path
    total_steps: int
    started: float = field(default_factory=time.monotonic)
    step: int = 0
    loss: float | None = None
    tokens_per_s: float | None = None
    best_val_loss: float | None = None
    device_name: str | None = None
    result: dict | None = None
    error: str | None = None
    terminal: bool = False
    checkpoint_step: int | None = None
    preempted_step: int | None = None
    eof: bool = False
    # Control: set by the heartbeat thread or signal handling, acted on by the main loop.
    lost: bool = False
    cancel: bool = False
    db_down: bool = False
    stop_reason: str | None = None
    term_sent_at: float | None = None
    kill_at: float | None = None
    last_beat_ok: float = field(default_factory=time.monotonic)
    exited_at: float | None = None

    @property
    def job_id(self) -> int:
        return int(self.lease.job_id)

    def progress(self) -> dict:
        """The heartbeat's progress payload."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {"step": self.step, "train_loss": self.loss, "tokens_per_s": self.tokens_per_s,
                "steps_per_s": self.step / elapsed if self.step else None}


class Reporter(Protocol):
    """What the worker tells its user; the CLI renders it (rich live lines or plain log lines)."""

    def started(self, r: Running) -> None: ...
    def tick(self, running: list[Running]) -> None: ...
    def finished(self, r: Running, outcome: str, wrote: bool) -> None: ...
    def message(self, text: str) -> None: ...


class QuietReporter:
    """Logs through `logging` only (tests, library use)."""

    def started(self, r: Running) -> None:
        log.info("job %s attempt %s started", r.job_id, r.lease.attempt_no)

    def tick(self, running: list[Running]) -> None:
        pass

    def finished(self, r: Running, outcome: str, wrote: bool) -> None:
        log.info("job %s: %s%s", r.job_id, outcome, "" if wrote else " (not recorded)")

    def message(self, text: str) -> None:
        log.info("%s", text)


@dataclass
class WorkerSummary:
    """Counts of what one worker run did, by outcome as this worker saw it."""

    worker_id: str
    claimed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    stopped_by: str | None = None

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def line(self) -> str:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items())) or "nothing run"
        why = f"stopped by {self.stopped_by}; " if self.stopped_by else ""
        return f"worker {self.worker_id}: {why}{self.claimed} claimed: {parts}"


def child_command(kind: str, config_json: str) -> list[str]:
    """argv of the child. Sleep children run the file with -I -S (no site, no package imports)
    and get their seconds as a plain number, so they need no json either."""
    if kind == "sleep":
        seconds = float(json.loads(config_json).get("seconds", 0))
        return [sys.executable, "-I", "-S", str(Path(child.__file__).resolve()), "sleep", repr(seconds)]
    return [sys.executable, "-m", "haares.child", kind, config_json]


def run_dir_for(run_key: str) -> Path:
    """The run directory: stable per run key (checkpoints survive attempts), under HAARES_HOME."""
    return runs_dir() / run_key


_CKPT_NAME = re.compile(r"^step_(\d{8,})\.ckpt$")  # haares.checkpoint's naming, read without importing torch


def local_checkpoint_step(run_dir: Path) -> int:
    """Step of the newest checkpoint file in run_dir/checkpoints on this host (0 if none)."""
    try:
        names = [p.name for p in (run_dir / "checkpoints").iterdir()]
    except OSError:
        return 0
    return max((int(m.group(1)) for m in map(_CKPT_NAME.match, names) if m), default=0)


def handoff_note(lease: Any, *, host: str, grace_s: float) -> str | None:
    """Why this attempt cannot resume where the job stopped (its checkpoint is on a host whose files
    this one cannot read), or None when it can (docs/worker.md, "Several hosts")."""
    step = getattr(lease, "ckpt_step", None) or 0
    if lease.kind != "train" or getattr(lease, "fresh", False) or step <= 0:
        return None
    here = local_checkpoint_step(run_dir_for(lease.run_key))
    if here >= step:
        return None
    return (f"the checkpoint at step {step} is on host {lease.ckpt_host} ({lease.ckpt_dir}), not readable on {host}; "
            f"after waiting {grace_s:g} s for that host, restarted from step {here}")


class Worker:
    """One worker process's state. Use `run_worker` unless a test needs the pieces."""

    def __init__(self, *, engine: Any, options: WorkerOptions, reporter: Reporter | None = None) -> None:
        self.engine = engine
        self.opt = options
        self.reporter: Reporter = reporter or QuietReporter()
        # HAARES_HOST names this host where several share one hostname (containers, tests).
        self.host = host_name()
        self.pid = os.getpid()
        self.worker_id = f"{self.host}:{self.pid}:{secrets.token_hex(3)}"
        self.summary = WorkerSummary(self.worker_id)
        self.running: dict[int, Running] = {}
        self.lock = threading.Lock()
        self.events: queue.Queue = queue.Queue()
        self.stop_requests = 0
        self.stop_signal: str | None = None
        self.done = threading.Event()
        self._last_reap = float("-inf")
        self._stops_announced = 0
        self.deadline = options.deadline()
        self._unfit_announced = False
        # The queue API, imported here rather than at module top so `import haares.worker` stays cheap.
        from haares import jobs

        self.jobs = jobs

    # --- signals ---------------------------------------------------------------------------

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

    # --- registration and heartbeat --------------------------------------------------------

    def _register(self) -> None:
        self.jobs.register_worker(engine=self.engine, worker_id=self.worker_id, host=self.host, pid=self.pid,
                                  gpu=self.opt.gpu, version=__version__, heartbeat_s=self.opt.heartbeat_s,
                                  lease_ttl_s=self.opt.lease_ttl_s)

    def _touch_worker(self, *, draining: bool = False) -> None:
        self.jobs.touch_worker(engine=self.engine, worker_id=self.worker_id, draining=draining)

    def _heartbeat_loop(self) -> None:
        """Renew every running lease each heartbeat_s; flag lost leases, cancels and DB outages."""
        api = self.jobs
        beats = 0
        while not self.done.wait(self.opt.heartbeat_s):
            beats += 1
            with self.lock:
                snapshot = [r for r in self.running.values() if not r.lost and r.exited_at is None]
            for r in snapshot:
                try:
                    beat = api.heartbeat(engine=self.engine, lease=r.lease, lease_ttl_s=self.opt.lease_ttl_s,
                                         progress=r.progress())
                except Exception as exc:  # noqa: BLE001 - any DB failure: keep training; _police times it
                    log.warning("heartbeat for job %s failed (%.1f s without a renewal): %s",
                                r.job_id, time.monotonic() - r.last_beat_ok, _one_line(exc))
                    continue
                alive = getattr(beat, "alive", beat)
                if not alive:
                    r.lost = True
                    continue
                r.last_beat_ok = time.monotonic()
                if getattr(beat, "cancel_requested", False):
                    r.cancel = True
            if beats % 5 == 0:  # last_seen is informational: spare the write lock
                try:
                    self._touch_worker(draining=self.stop_requests > 0)
                except Exception as exc:  # noqa: BLE001 - the worker row is informational only
                    log.debug("worker row update failed: %s", _one_line(exc))

    # --- children ---------------------------------------------------------------------------

    def _spawn(self, lease: Any, note: str | None = None) -> Running:
        run_dir = run_dir_for(lease.run_key)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        log_path = run_dir / "logs" / f"attempt-{lease.attempt_no}.log"
        config = json.loads(lease.config_json)
        total = int(config.get("train", {}).get("steps", 0)) if lease.kind == "train" else 0
        read_fd, write_fd = os.pipe()
        env = dict(
            os.environ,
            CUDA_VISIBLE_DEVICES="" if self.opt.gpu == "cpu" else self.opt.gpu,
            HAARES_JOB_ID=str(lease.job_id),
            HAARES_ATTEMPT=str(lease.attempt_no),
            HAARES_RUN_DIR=str(run_dir),
            HAARES_CKPT_DIR=str(run_dir),
            HAARES_RESUME="0" if getattr(lease, "fresh", False) else "1",
            HAARES_EVENT_FD=str(write_fd),
            HAARES_PARENT_PID=str(self.pid),
            HAARES_RUN_LABELS=self._run_labels(lease),
            HAARES_GPU=self.opt.gpu,  # what this worker promised; the child refuses to train on anything else
            PYTHONUNBUFFERED="1",
        )
        if self.opt.gpu == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # K training children on the CPU share its cores; each taking all of them oversubscribes.
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.opt.slots))
        try:
            with open(log_path, "ab") as logf:
                if note:
                    logf.write(f"haares.worker: {note}\n".encode())
                    logf.flush()
                # Popen runs on the main thread only: PR_SET_PDEATHSIG fires when the spawning
                # *thread* exits, so a short-lived spawning thread would kill the child early.
                # A new session keeps a terminal's Ctrl-C away from children: the worker decides.
                proc = subprocess.Popen(
                    child_command(lease.kind, lease.config_json), stdin=subprocess.DEVNULL, stdout=logf,
                    stderr=subprocess.STDOUT, env=env, pass_fds=(write_fd,), start_new_session=True,
                )
        except OSError:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        r = Running(lease=lease, proc=proc, log_path=log_path, total_steps=total)
        threading.Thread(target=self._read_events, args=(r, read_fd), daemon=True,
                         name=f"haares-events-{lease.job_id}").start()
        return r

    def _run_labels(self, lease: Any) -> str:
        """The job's grid names as JSON for the child's TensorBoard tree; "[]" if the read fails (names only)."""
        try:
            return json.dumps(self.jobs.grid_labels(engine=self.engine, job_id=lease.job_id))
        except Exception as exc:  # noqa: BLE001 - curves still land in the run dir, just unnamed
            log.warning("grid labels of job %s unreadable: %s", lease.job_id, _one_line(exc))
            return "[]"

    def _read_events(self, r: Running, fd: int) -> None:
        """One thread per child: JSON lines from the pipe onto the main loop's queue; None at EOF."""
        with os.fdopen(fd, "rb") as pipe:
            for line in pipe:
                try:
                    self.events.put((r, json.loads(line)))
                except ValueError:
                    log.warning("job %s: unreadable event %r", r.job_id, line[:200])
        self.events.put((r, None))

    def _handle_event(self, r: Running, event: dict | None) -> None:
        api = self.jobs
        if event is None:
            r.eof = True
            return
        kind = event.get("type")
        if kind == "progress":
            r.step = int(event.get("step") or 0)
            r.loss = event.get("loss")
            r.tokens_per_s = event.get("tokens_per_s")
        elif kind == "start":
            # The claim guessed start_step from the job's last reported step; the child knows
            # the checkpoint it resumes from.
            r.step = int(event.get("step") or 0)
            if r.step < (getattr(r.lease, "ckpt_step", 0) or 0) and not getattr(r.lease, "fresh", False):
                self.reporter.message(f"job {r.job_id}: restarting from step {r.step}: no checkpoint of step "
                                      f"{r.lease.ckpt_step} here (it did not travel with the queue?)")
        elif kind == "checkpoint":
            r.checkpoint_step = event.get("step")
            if not r.lost and r.checkpoint_step is not None:
                self._fenced(r, api.record_checkpoint, host=self.host, step=int(r.checkpoint_step),
                             ckpt_dir=str(run_dir_for(r.lease.run_key)))
        elif kind == "result":
            r.result = event.get("result") or {}
        elif kind == "preempted":
            r.preempted_step = event.get("step")
        elif kind == "error":
            r.error = event.get("error")
            r.terminal = bool(event.get("terminal"))
        elif kind == "device":
            r.device_name = event.get("name")
            if not r.lost:
                self._fenced(r, api.set_attempt_device, device_name=r.device_name)
        elif kind == "eval":
            point = dict(event.get("point") or {})
            r.step = max(r.step, int(point.get("step") or 0))
            loss = point.get("val_loss")
            if loss is not None and (r.best_val_loss is None or loss < r.best_val_loss):
                r.best_val_loss = loss
            if not r.lost:
                self._fenced(r, api.record_eval, point=point)

    def _fenced(self, r: Running, fn: Any, **kwargs: Any) -> None:
        """Call a fenced write; False means the lease is gone, an exception means the DB is."""
        try:
            ok = fn(engine=self.engine, lease=r.lease, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a DB hiccup must not kill the worker
            log.warning("job %s: %s failed: %s", r.job_id, getattr(fn, "__name__", fn), _one_line(exc))
            return
        if ok is False:
            r.lost = True

    def _signal_child(self, r: Running, sig: int) -> None:
        try:
            r.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def _stop_child(self, r: Running, reason: str, grace_s: float) -> None:
        """SIGTERM now (the child checkpoints at its next step), SIGKILL after grace_s."""
        if r.stop_reason is None:
            r.stop_reason = reason
        if r.term_sent_at is None and r.proc.poll() is None:
            r.term_sent_at = time.monotonic()
            self._signal_child(r, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        r.kill_at = deadline if r.kill_at is None else min(r.kill_at, deadline)

    def _police(self) -> None:
        """Act on flags: lost lease, cancel, DB outage, worker stop; SIGKILL past deadlines."""
        now = time.monotonic()
        with self.lock:
            children = list(self.running.values())
        if self.stop_requests != self._stops_announced:
            # Announced here, not in the signal handler, where printing is not safe.
            self._stops_announced = self.stop_requests
            if self.stop_requests == 1:
                self.reporter.message(f"{self.stop_signal}: no new jobs; {len(children)} child(ren) checkpoint and "
                                      f"hand their jobs back (up to {self._preempt_grace(now):.0f} s); Ctrl-C again to kill them")
            else:
                self.reporter.message("killing the children now; their jobs go back to the queue")
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
                self._stop_child(r, "lost", self.opt.lost_grace_s)
            elif r.cancel:
                self._stop_child(r, "cancel", self.opt.grace_s)
            elif r.db_down:
                self._stop_child(r, "db_down", self.opt.grace_s)
            elif self.stop_requests:
                self._stop_child(r, "preempt", self._preempt_grace(now))
            if self.stop_requests > 1 and r.proc.poll() is None:
                r.kill_at = now  # second Ctrl-C: no more grace
            if r.kill_at is not None and now >= r.kill_at and r.proc.poll() is None:
                self._signal_child(r, signal.SIGKILL)

    def _preempt_grace(self, now: float) -> float:
        """SIGTERM to SIGKILL on preemption: --grace, cut so that children are gone 2 s before a time limit."""
        if self.deadline is None:
            return self.opt.grace_s
        return max(1.0, min(self.opt.grace_s, self.deadline.remaining(now) - 2.0))

    def _check_deadline(self) -> None:
        """At the time limit's checkpoint margin, stop as on SIGTERM (children checkpoint, jobs go back)."""
        if self.deadline is not None and not self.stop_requests and self.deadline.preempt_due():
            self.request_stop("time limit")

    def _outcome(self, r: Running) -> tuple[str, dict]:
        """Map how the child ended to finish() arguments."""
        code = r.proc.returncode
        end_step = r.preempted_step if r.preempted_step is not None else r.checkpoint_step
        base: dict[str, Any] = {"exit_code": code}
        if code == child.EXIT_OK and r.result is not None:
            final = r.result.get("final_step")
            return "succeeded", {**base, "result": r.result, "end_step": final if final is not None else end_step}
        if r.stop_reason == "cancel":
            return "cancelled", {**base, "end_step": end_step, "error": "cancelled by request"}
        if code == child.EXIT_PREEMPTED or (r.stop_reason in ("preempt", "db_down") and r.result is None):
            why = "worker stopped" if r.stop_reason == "preempt" else "database unreachable"
            return "preempted", {**base, "end_step": end_step, "error": f"preempted ({why})"}
        if code == child.EXIT_DEVICE:
            return "failed", {**base, "end_step": end_step, "error": r.error or "the child's device is not the worker's"}
        if code == child.EXIT_TERMINAL:
            return "failed", {**base, "end_step": end_step, "terminal": True,
                              "error": r.error or _last_log_line(r.log_path) or "terminal failure"}
        if code is not None and code < 0:
            error = f"killed by signal {signal.Signals(-code).name}"
        else:
            error = r.error or _last_log_line(r.log_path) or f"exit code {code}"
            if code == child.EXIT_OK:
                error = "child exited 0 without reporting a result"
        return "failed", {**base, "end_step": end_step, "error": error}

    def _finalize(self, r: Running) -> None:
        """Record a finished child (unless fenced out) and forget it."""
        api = self.jobs
        outcome, kwargs = self._outcome(r)
        wrote: bool | None = None  # None: the database never answered
        if r.lost:
            outcome = "lost"
        else:
            for attempt in range(3):
                try:
                    wrote = bool(api.finish(engine=self.engine, lease=r.lease, outcome=outcome, **kwargs))
                    break
                except Exception as exc:  # noqa: BLE001 - DB down: the lease expires and a reaper requeues
                    log.warning("job %s: finish(%s) failed (try %d): %s", r.job_id, outcome, attempt + 1,
                                _one_line(exc))
                    time.sleep(0.5 * (attempt + 1))
            if wrote is False:
                self.reporter.message(f"job {r.job_id}: lease lost before its {outcome} end could be recorded; "
                                      "another worker owns it, nothing written")
                outcome = "lost"
            elif wrote is None:
                self.reporter.message(f"job {r.job_id}: could not record {outcome}; the reaper will requeue it")
                outcome = "unrecorded"
        with self.lock:
            self.running.pop(r.job_id, None)
        if r.proc.returncode == child.EXIT_DEVICE and not self.stop_requests:
            # The device this worker promised is not there: claiming more would only fail them too.
            self.reporter.message(f"job {r.job_id}: {r.error or 'device mismatch'}; this worker stops claiming")
            self.request_stop("device mismatch")
        self.summary.add(outcome)
        self.reporter.finished(r, outcome, bool(wrote))

    # --- claiming -----------------------------------------------------------------------------

    def _maybe_reap(self, *, force: bool = False) -> int:
        """Requeue expired leases (and dead same-host workers' jobs); at most every reap_every_s."""
        now = time.monotonic()
        if not force and now - self._last_reap < self.opt.reap_every_s:
            return 0
        self._last_reap = now
        try:
            n = int(self.jobs.reap(engine=self.engine, host=self.host) or 0)
        except Exception as exc:  # noqa: BLE001 - reaping is best effort; any process may do it
            log.warning("reap failed: %s", _one_line(exc))
            return 0
        if n:
            self.reporter.message(f"reclaimed {n} job(s) with expired leases or dead workers")
        return n

    def _claim_one(self) -> Any:
        from haares.jobs.procs import process_start_time

        # Jobs whose checkpoint another host recorded, but that this host's results home holds too.
        readable = tuple(job_id for job_id, run_key, step in self.jobs.foreign_checkpoints(engine=self.engine, host=self.host)
                         if local_checkpoint_step(run_dir_for(run_key)) >= step)
        return self.jobs.claim(
            engine=self.engine, worker_id=self.worker_id, host=self.host, pid=self.pid,
            pid_start=process_start_time(self.pid), gpu=self.opt.gpu, lease_ttl_s=self.opt.lease_ttl_s,
            kinds=self.opt.kinds, ckpt_grace_s=self.opt.checkpoint_grace_s, readable=readable,
            **self._fitting(),
        )

    def _fitting(self) -> dict:
        """Under a time limit, the claim's `job_ids`: the queued jobs that can finish in time."""
        if self.deadline is None:
            return {}
        from haares.timelimit import claimable_ids

        ids, unfit = claimable_ids(engine=self.engine, deadline=self.deadline, kinds=self.opt.kinds,
                                   runs_dir=runs_dir())
        if unfit and not ids and not self._unfit_announced:
            self._unfit_announced = True
            self.reporter.message(f"time limit: {unfit} queued job(s) cannot finish in the "
                                  f"{self.deadline.remaining():.0f} s left; not claiming them")
        return {"job_ids": ids}

    def _may_claim(self) -> bool:
        if self.stop_requests:
            return False
        if self.opt.max_jobs is not None and self.summary.claimed >= self.opt.max_jobs:
            return False
        return len(self.running) < self.opt.slots

    def _fill_slots(self) -> bool:
        """Claim and spawn until the slots are full; False when the queue had nothing claimable."""
        while self._may_claim():
            lease = self._claim_one()
            if lease is None:
                return False
            self.summary.claimed += 1
            note = handoff_note(lease, host=self.host, grace_s=self.opt.checkpoint_grace_s)
            if note:
                self.reporter.message(f"job {lease.job_id}: {note}")
                self.jobs.record_restart(engine=self.engine, lease=lease, note=note,
                                         start_step=local_checkpoint_step(run_dir_for(lease.run_key)))
            try:
                r = self._spawn(lease, note)
            except OSError as exc:
                self.jobs.finish(engine=self.engine, lease=lease, outcome="failed",
                                   error=f"could not start the child: {_one_line(exc)}")
                self.summary.add("failed")
                continue
            with self.lock:
                self.running[r.job_id] = r
            self._fenced(r, self.jobs.set_attempt_log, log_path=str(r.log_path))
            self.reporter.started(r)
        return True

    # --- main loop ---------------------------------------------------------------------------

    def _drain_events(self, timeout: float) -> None:
        """Wait up to `timeout` for a child event (the loop's only sleep), then handle all queued ones."""
        try:
            r, event = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        self._handle_event(r, event)
        self._drain_pending_events()

    def _collect_exits(self) -> bool:
        """Finalize children that exited (after their last event). True if any finished."""
        finished = False
        with self.lock:
            children = list(self.running.values())
        for r in children:
            if r.eof and r.proc.poll() is None:
                # EOF on the pipe means the child is exiting; the exit status follows within ms.
                try:
                    r.proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
            if r.proc.poll() is None:
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

    def _drain_pending_events(self) -> None:
        while True:
            try:
                r, event = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle_event(r, event)

    def run(self) -> WorkerSummary:
        """Register, then claim / run / record until the queue is empty (or forever with wait)."""
        self._register()
        old_handlers = self._install_signals()
        beat = threading.Thread(target=self._heartbeat_loop, name="haares-heartbeat", daemon=True)
        beat.start()
        self._maybe_reap(force=True)
        queue_empty = False
        next_poll = 0.0
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
                if not self.running:
                    limit_hit = self.opt.max_jobs is not None and self.summary.claimed >= self.opt.max_jobs
                    if self.stop_requests or limit_hit or (queue_empty and not self.opt.wait):
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
            try:
                self._touch_worker(draining=True)
            except Exception as exc:  # noqa: BLE001
                log.debug("worker row update failed: %s", _one_line(exc))
        self.summary.stopped_by = self.stop_signal
        return self.summary

    def _try_fill(self) -> bool:
        """_fill_slots, with DB trouble reported and treated as an empty queue (polled again later)."""
        try:
            return self._fill_slots()
        except HaaresError:
            raise
        except Exception as exc:  # noqa: BLE001
            self.reporter.message(f"claim failed: {_one_line(exc)}")
            return False


def run_worker(*, db_url: str, options: WorkerOptions, reporter: Reporter | None = None) -> WorkerSummary:
    """Open the database (HaaresError if unusable) and run a worker until done; see Worker.run."""
    from haares.jobs.db import make_engine

    check_gpu_visible(options.gpu)
    engine = make_engine(db_url)
    try:
        return Worker(engine=engine, options=options, reporter=reporter).run()
    finally:
        engine.dispose()


def _one_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _last_log_line(path: Path, max_bytes: int = 8192) -> str | None:
    """Last non-empty line of a child's log (the error summary when the child sent none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:500] if lines else None
