"""One training child as the worker sees it: the process, its event stream, and how to stop it.

`ChildProcess` starts a child (haares.kinds gives its argv, haares.protocol its environment and events)
and reads its event lines on a thread; `Running` is what the worker knows about one claimed job while
its child runs (progress from events, stop flags set by the heartbeat thread and signal handling).
Nothing here touches the database.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from haares import protocol
from haares.jobs.lease import Lease
from haares.protocol import EventType

log = logging.getLogger("haares.worker")

EventItem = tuple[EventType, dict] | None
"""One decoded event, or None at the end of the stream (the child closed its end: it is exiting)."""


class ChildProcess:
    """A started child process: its log file, and a thread feeding its decoded events to a callback."""

    def __init__(self, proc: subprocess.Popen, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @classmethod
    def start(cls, *, argv: list[str], env: dict[str, str], log_path: Path, note: str | None,
              on_event: Callable[[EventItem], None]) -> ChildProcess:
        """Start `argv` with `env` (plus the event fd), output appended to `log_path` (after `note`).

        Must run on the main thread: PR_SET_PDEATHSIG fires when the spawning *thread* exits, so a
        short-lived spawning thread would kill the child early. OSError if it cannot start.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        try:
            with open(log_path, "ab") as logf:
                if note:
                    logf.write(f"haares.worker: {note}\n".encode())
                    logf.flush()
                # A new session keeps a terminal's Ctrl-C away from children: the worker decides.
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    env={**env, protocol.ENV_EVENT_FD: str(write_fd)}, pass_fds=(write_fd,), start_new_session=True,
                )
        except OSError:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        child = cls(proc, log_path)
        threading.Thread(target=child._read_events, args=(read_fd, on_event), daemon=True,
                         name=f"haares-events-{proc.pid}").start()
        return child

    def _read_events(self, fd: int, on_event: Callable[[EventItem], None]) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for line in pipe:
                try:
                    on_event(protocol.decode(line))
                except protocol.ProtocolError as exc:
                    log.warning("child %s: %s", self.proc.pid, exc)
        on_event(None)

    def poll(self) -> int | None:
        """The exit code once the child has exited (negative: killed by that signal), else None."""
        return self.proc.poll()

    def wait(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the child to exit."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    def send_signal(self, sig: int) -> None:
        """Signal the child (nothing if it is already gone)."""
        try:
            self.proc.send_signal(sig)
        except ProcessLookupError:
            pass


def start_running(lease: Lease, *, argv: list[str], env: dict[str, str], log_path: Path, note: str | None,
                  total_steps: int, events: queue.Queue) -> Running:
    """Start the child of `lease` (ChildProcess.start); its events arrive on `events` as (Running, EventItem)."""
    holder: list[Running] = []
    ready = threading.Event()

    def on_event(item: EventItem) -> None:
        ready.wait()  # the Running exists before its first event is queued
        events.put((holder[0], item))

    child = ChildProcess.start(argv=argv, env=env, log_path=log_path, note=note, on_event=on_event)
    holder.append(Running(lease=lease, child=child, total_steps=total_steps))
    ready.set()
    return holder[0]


def child_env(lease: Lease, *, gpu: str, slots: int, run_dir: Path, parent_pid: int, labels_json: str) -> dict[str, str]:
    """The child's environment: this process's, plus the protocol's variables (haares.protocol.ENV_*)."""
    env = dict(
        os.environ,
        CUDA_VISIBLE_DEVICES="" if gpu == "cpu" else gpu,
        PYTHONUNBUFFERED="1",
        **{
            protocol.ENV_JOB_ID: str(lease.job_id),
            protocol.ENV_ATTEMPT: str(lease.attempt_no),
            protocol.ENV_RUN_DIR: str(run_dir),
            protocol.ENV_RESUME: "0" if lease.fresh else "1",
            protocol.ENV_PARENT_PID: str(parent_pid),
            protocol.ENV_RUN_LABELS: labels_json,
            protocol.ENV_GPU: gpu,  # what this worker promised; the child refuses to train on anything else
        },
    )
    if gpu == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # K training children on the CPU share its cores; each taking all of them oversubscribes.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // slots))
    return env


@dataclass
class Running:
    """One child and what the parent knows about it. Mutated by the main loop; flags by the heartbeat."""

    lease: Lease
    child: ChildProcess
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
        return self.lease.job_id

    @property
    def log_path(self) -> Path:
        return self.child.log_path

    def progress(self) -> dict:
        """The heartbeat's progress payload."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {"step": self.step, "train_loss": self.loss, "tokens_per_s": self.tokens_per_s,
                "steps_per_s": self.step / elapsed if self.step else None}

    def apply(self, event: EventType, fields: dict) -> None:
        """Update what is known from one event (haares.protocol); the worker then records what needs it."""
        match event:
            case EventType.PROGRESS:
                self.step = int(fields.get("step") or 0)
                self.loss = fields.get("loss")
                self.tokens_per_s = fields.get("tokens_per_s")
            case EventType.START:
                self.step = int(fields.get("step") or 0)
            case EventType.CHECKPOINT:
                self.checkpoint_step = fields.get("step")
            case EventType.RESULT:
                self.result = fields.get("result") or {}
            case EventType.PREEMPTED:
                self.preempted_step = fields.get("step")
            case EventType.ERROR:
                self.error = fields.get("error")
                self.terminal = bool(fields.get("terminal"))
            case EventType.DEVICE:
                self.device_name = fields.get("name")
            case EventType.EVAL:
                point = fields.get("point") or {}
                self.step = max(self.step, int(point.get("step") or 0))
                loss = point.get("val_loss")
                if loss is not None and (self.best_val_loss is None or loss < self.best_val_loss):
                    self.best_val_loss = loss

    def stop(self, reason: str, grace_s: float) -> None:
        """SIGTERM now (the child checkpoints at its next step), SIGKILL after grace_s (the earliest asked)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.term_sent_at is None and self.child.poll() is None:
            self.term_sent_at = time.monotonic()
            self.child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        self.kill_at = deadline if self.kill_at is None else min(self.kill_at, deadline)

    def kill_if_due(self, now: float) -> None:
        """SIGKILL a child still running past its kill deadline."""
        if self.kill_at is not None and now >= self.kill_at and self.child.poll() is None:
            self.child.send_signal(signal.SIGKILL)


def last_log_line(path: Path, max_bytes: int = 8192) -> str | None:
    """Last non-empty line of a child's log (the error summary when the child sent none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:500] if lines else None
