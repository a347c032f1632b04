"""The training child: one claimed job in its own process, reporting to the worker over a pipe.

Run as `python -m haares.child train CONFIG_JSON`. Knows torch (through haares.train), never the
database: every event goes to the parent as one line of haares.protocol on the fd in HAARES_EVENT_FD,
and the exit code is one of haares.protocol's EXIT_* codes.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from haares import protocol
from haares.errors import one_line
from haares.protocol import (
    EXIT_DEVICE,
    EXIT_OK,
    EXIT_OUT_OF_MEMORY,
    EXIT_PARENT_GONE,
    EXIT_PREEMPTED,
    EXIT_TERMINAL,
    EventType,
    ParentGone,
)

PR_SET_PDEATHSIG = 1
SIGKILL = 9  # the same on every Linux architecture


class EventPipe:
    """Protocol events to the parent on an inherited fd, one whole line at a time from any thread."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, event: EventType, **fields: object) -> None:
        """Write one event; raises ParentGone if the parent is gone."""
        with self._lock:
            protocol.write_event(self._fd, event, **fields)


def die_with_parent(expected_ppid: int | None) -> None:
    """Ask Linux to SIGKILL this process when the worker dies, and exit if it already has.

    SIGKILL, not SIGTERM: a reclaiming worker on the same host restarts the job at once from the
    last complete checkpoint, so a zombie child must not go on writing into the run directory.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the pipe and the ppid watchdog still catch it
            pass
    # The parent may have died between fork and prctl, and then we are already orphaned.
    if expected_ppid is not None and os.getppid() != expected_ppid:
        os._exit(EXIT_PARENT_GONE)


def _watch_parent(expected_ppid: int, period_s: float = 1.0) -> None:
    """Backstop for platforms without PDEATHSIG: exit when re-parented."""

    def loop() -> None:
        while True:
            time.sleep(period_s)
            if os.getppid() != expected_ppid:
                os._exit(EXIT_PARENT_GONE)

    threading.Thread(target=loop, name="haares-ppid-watch", daemon=True).start()


class DeviceMismatch(Exception):
    """The worker promised a GPU (HAARES_GPU) that this process cannot see: train nowhere else."""


def pick_device() -> str:
    """"cuda" when the worker gave us a GPU, "cpu" for a CPU worker; DeviceMismatch when the promised
    GPUs are not all visible (a CPU-only torch, a wrong index, a lost device)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    promised = os.environ.get(protocol.ENV_GPU, "cpu" if visible == "" else visible)
    if promised == "cpu":
        return "cpu"
    import torch

    wanted = len(promised.split(","))
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if seen < wanted:
        raise DeviceMismatch(f"the worker promised GPU {promised} but this process sees {seen} CUDA device(s) "
                             f"(CUDA_VISIBLE_DEVICES={visible!r}, torch {torch.__version__}); not training on the CPU")
    return "cuda"


def resume_step(run_dir: object) -> int:
    """Step of the newest checkpoint in run_dir/checkpoints (0 if none): where train() will resume.

    train() skips a corrupt newest file for an older one; then this overstates the start step.
    """
    from pathlib import Path

    from haares.checkpoint import list_checkpoints

    found = list_checkpoints(Path(str(run_dir)) / "checkpoints")
    return found[-1][0] if found else 0


def run_labels(text: str | None) -> tuple:
    """HAARES_RUN_LABELS (a JSON list of {grid, cell, method, seed}, set by the worker) as RunLabels.

    Labels only name the run's TensorBoard curves: a missing or unreadable value gives none.
    """
    import json

    from haares.sinks import RunLabel

    try:
        return tuple(RunLabel(str(d["grid"]), str(d.get("cell") or ""), str(d["method"]), int(d["seed"]))
                     for d in json.loads(text or "[]"))
    except (ValueError, TypeError, KeyError) as exc:
        print(f"haares.child: ignoring HAARES_RUN_LABELS ({exc})", file=sys.stderr, flush=True)
        return ()


class _TrainReports:
    """haares.train callbacks that send protocol events, remembering which eval steps were sent."""

    def __init__(self, events: EventPipe) -> None:
        self.events = events
        self.sent: set[int] = set()

    def on_eval(self, point: object) -> None:
        from dataclasses import asdict, is_dataclass

        self.events.send(EventType.EVAL, point=asdict(point) if is_dataclass(point) else dict(vars(point)))
        self.sent.add(int(getattr(point, "step", -1)))

    def on_progress(self, step: int, loss: float, tokens_per_s: float) -> None:
        self.events.send(EventType.PROGRESS, step=step, loss=loss, tokens_per_s=tokens_per_s)

    def on_checkpoint(self, step: int, path: object) -> None:
        self.events.send(EventType.CHECKPOINT, step=step, path=str(path))

    def unsent_evals(self, evals: list) -> None:
        """Send evaluations restored from a checkpoint (a run that finished or progressed before, perhaps
        recorded in another database over the same results home): this attempt never reported them."""
        for point in evals:
            if point.step not in self.sent:
                self.on_eval(point)


def run_train(config: dict, events: EventPipe) -> int:
    """Kind "train": train the config, reporting over the pipe; each way it can end is one exit code."""
    import signal
    import traceback

    from haares.config import ConfigError
    from haares.errors import HaaresError

    terminal: tuple[type[BaseException], ...] = (ConfigError, HaaresError)
    out_of_memory: tuple[type[BaseException], ...] = ()  # torch's, once torch is imported
    # Under srun, slurmstepd sends Slurm's USR1 warning to every process of the step, this one too:
    # the worker decides (it sends SIGTERM, on which train() checkpoints), so the default action
    # (terminate, which would count as a failure) must not apply.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        import torch

        from haares import train as trainer

        terminal = terminal + (trainer.NonFiniteLoss,)
        out_of_memory = (torch.cuda.OutOfMemoryError,)
        return _train(config, events, trainer)
    except ParentGone:
        raise
    except out_of_memory as exc:
        traceback.print_exc()
        # Whether this is worth another try depends on what else shared the GPU, which only the worker knows.
        events.send(EventType.ERROR, error=one_line(exc, last=True), terminal=False)
        return EXIT_OUT_OF_MEMORY
    except DeviceMismatch as exc:
        print(f"haares.child: {exc}", file=sys.stderr, flush=True)
        events.send(EventType.ERROR, error=str(exc), terminal=False)
        return EXIT_DEVICE
    except terminal as exc:
        traceback.print_exc()
        events.send(EventType.ERROR, error=one_line(exc, last=True), terminal=True)
        return EXIT_TERMINAL
    except Exception as exc:  # noqa: BLE001 - any other failure is retryable; the log keeps the traceback
        traceback.print_exc()
        events.send(EventType.ERROR, error=one_line(exc, last=True), terminal=False)
        return 1


def _train(config: dict, events: EventPipe, trainer: Any) -> int:
    """RunConfig -> haares.train.train on the promised device, resuming from the run folder's checkpoint."""
    from pathlib import Path

    from haares.config import RunConfig
    from haares.measure import device_identity
    from haares.settings import home
    from haares.sinks import RunInfo, default_sinks

    cfg = RunConfig.from_dict(config)
    device = pick_device()
    name = device_identity(device)  # what this process really runs on: the GPU's name and UUID, or "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    print(f"haares.child job={os.environ.get(protocol.ENV_JOB_ID)} attempt={os.environ.get(protocol.ENV_ATTEMPT)} "
          f"device={name} CUDA_VISIBLE_DEVICES={visible!r} pid={os.getpid()}", flush=True)
    events.send(EventType.DEVICE, name=name, pid=os.getpid(), cuda_visible_devices=visible)
    should_stop = trainer.install_sigterm_handler()
    reports = _TrainReports(events)
    # Progress is throttled (0.5 s): the parent only needs it for heartbeats and the live line.
    callbacks = trainer.TrainCallbacks(on_eval=reports.on_eval, on_progress=reports.on_progress,
                                       on_checkpoint=reports.on_checkpoint, progress_interval_s=0.5)
    run_dir = Path(os.environ[protocol.ENV_RUN_DIR])
    resume = os.environ.get(protocol.ENV_RESUME, "1") != "0"
    start = resume_step(run_dir) if resume else 0
    # Said in the attempt's log (`haares logs`): a restart from 0 after a preemption is a checkpoint
    # that did not travel (or `retry --fresh`), and the steps before it are trained again.
    print(f"haares.child resuming from the checkpoint of step {start}" if start else
          f"haares.child starting at step 0 ({'no checkpoint in ' + str(run_dir / 'checkpoints') if resume else 'fresh start requested'})",
          flush=True)
    sinks = default_sinks(RunInfo(run_key=cfg.run_key(), run_dir=run_dir, home=home(),
                                  labels=run_labels(os.environ.get(protocol.ENV_RUN_LABELS))))
    events.send(EventType.START, step=start)
    try:
        result = trainer.train(cfg, device=device, run_dir=run_dir, callbacks=sinks.wrap(callbacks),
                               resume=resume, should_stop=should_stop)
    except trainer.Preempted as exc:
        events.send(EventType.PREEMPTED, step=getattr(exc, "step", None))
        print(f"haares.child preempted at step {getattr(exc, 'step', '?')}", flush=True)
        return EXIT_PREEMPTED
    finally:
        sinks.close()
    reports.unsent_evals(result.evals)
    events.send(EventType.RESULT, result={
        "best_val_loss": result.best_val_loss, "best_step": result.best_step, "final_step": result.final_step,
        "batch_order_hash": result.batch_order_hash, "device": result.device,
    })
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point: `child train CONFIG_JSON`; the environment carries the rest (haares.protocol.ENV_*)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "train":
        print("usage: python -m haares.child train CONFIG_JSON", file=sys.stderr)
        return 2
    ppid = os.environ.get(protocol.ENV_PARENT_PID)
    expected = int(ppid) if ppid else None
    die_with_parent(expected)
    fd_text = os.environ.get(protocol.ENV_EVENT_FD)
    fd = int(fd_text) if fd_text else None
    try:
        import json

        if expected is not None:
            _watch_parent(expected)
        return run_train(json.loads(args[1]), EventPipe(fd))
    except ParentGone:
        return EXIT_PARENT_GONE


if __name__ == "__main__":
    sys.exit(main())
