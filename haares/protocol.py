"""The worker-to-child protocol, declared once and read by both sides (docs/worker.md, "The child protocol").

A training child is started by the worker (haares.worker_child) with the environment variables below
and reports on an inherited pipe, one JSON object per line: {"type": EVENT, **fields}. Its exit code
tells the worker how the attempt ended (haares.outcome maps code plus events to a queue outcome).

Event types and their fields (all optional to the reader, which keeps what it knows):

| type         | fields                                   | sent when                                        |
|--------------|------------------------------------------|--------------------------------------------------|
| `device`     | name, pid, cuda_visible_devices          | the child picked its device (before training)    |
| `start`      | step                                     | training starts or resumes at `step`             |
| `progress`   | step, loss, tokens_per_s                 | every ~0.5 s of training (heartbeat payload)     |
| `eval`       | point (a dict of haares.jobs.lease.EVAL_FIELDS) | an evaluation finished (before its checkpoint) |
| `checkpoint` | step, path                               | a checkpoint file is complete                    |
| `preempted`  | step                                     | stopped on SIGTERM after checkpointing           |
| `error`      | error (one line), terminal (bool)        | before a failing exit                            |
| `result`     | result (a dict; `final_step` for train)  | before exit code EXIT_OK                         |

Imports only os, json and enum, so a minimal child (tests' sleep kind) can use it cheaply.
"""

from __future__ import annotations

import json
import os
from enum import Enum


class EventType(str, Enum):
    """The `type` of an event line; a line of another type is a protocol error."""

    DEVICE = "device"
    START = "start"
    PROGRESS = "progress"
    EVAL = "eval"
    CHECKPOINT = "checkpoint"
    PREEMPTED = "preempted"
    ERROR = "error"
    RESULT = "result"


EVENT_FIELDS: dict[EventType, tuple[str, ...]] = {
    EventType.DEVICE: ("name", "pid", "cuda_visible_devices"),
    EventType.START: ("step",),
    EventType.PROGRESS: ("step", "loss", "tokens_per_s"),
    EventType.EVAL: ("point",),
    EventType.CHECKPOINT: ("step", "path"),
    EventType.PREEMPTED: ("step",),
    EventType.ERROR: ("error", "terminal"),
    EventType.RESULT: ("result",),
}
"""The fields each event type carries; `encode` refuses any other."""

# Exit codes of a child (sysexits.h names where one fits); any other code is a retryable failure.
EXIT_OK = 0
EXIT_TERMINAL = 65
"""EX_DATAERR: NonFiniteLoss, bad config; failed without a retry."""
EXIT_DEVICE = 69
"""EX_UNAVAILABLE: the device is not what the worker promised; nothing trained, the worker stops claiming."""
EXIT_OUT_OF_MEMORY = 71
"""CUDA out of memory. Alone on its GPU the run does not fit: failed without a retry. Beside other
runs of the worker (--slots) the others may be what filled the card: requeued without using a retry,
and the worker runs fewer at once (haares.outcome.outcome_of)."""
EXIT_PARENT_GONE = 70
"""The worker died; nobody will record this attempt."""
EXIT_PREEMPTED = 75
"""EX_TEMPFAIL: checkpointed after SIGTERM; requeued without using a retry."""

# Environment variables the worker sets for each child.
ENV_JOB_ID = "HAARES_JOB_ID"
ENV_ATTEMPT = "HAARES_ATTEMPT"
ENV_RUN_DIR = "HAARES_RUN_DIR"
"""The run folder, stable per run key: checkpoints in its `checkpoints/`, logs in its `logs/`."""
ENV_RESUME = "HAARES_RESUME"
""""1": resume from the newest checkpoint in the run folder; "0": start fresh (`retry --fresh`)."""
ENV_EVENT_FD = "HAARES_EVENT_FD"
"""The inherited pipe fd the child writes event lines to."""
ENV_PARENT_PID = "HAARES_PARENT_PID"
"""The worker's pid: the child exits (EXIT_PARENT_GONE) once re-parented."""
ENV_RUN_LABELS = "HAARES_RUN_LABELS"
"""JSON list of {grid, cell, method, seed}: names for the run's TensorBoard curves."""
ENV_GPU = "HAARES_GPU"
"""The worker's normalised --gpu ("cpu" or indices): the child refuses to train on anything else."""


class ProtocolError(ValueError):
    """An event line that is not JSON, not an object, of an unknown type, or with unknown fields."""


def encode(event: EventType, **fields: object) -> bytes:
    """One event line: {"type": event, **fields} as JSON plus a newline. ValueError on an undeclared field."""
    extra = fields.keys() - set(EVENT_FIELDS[event])
    if extra:
        raise ValueError(f"event {event.value} has no field(s) {sorted(extra)}")
    return (json.dumps({"type": event.value, **fields}, default=_jsonable) + "\n").encode()


def decode(line: bytes) -> tuple[EventType, dict]:
    """(type, fields) of one event line; ProtocolError when it is not a declared event."""
    try:
        data = json.loads(line)
        event = EventType(data.pop("type"))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ProtocolError(f"unreadable event {line[:200]!r}") from exc
    extra = data.keys() - set(EVENT_FIELDS[event])
    if extra:
        raise ProtocolError(f"event {event.value} has undeclared field(s) {sorted(extra)}")
    return event, data


def _jsonable(value: object) -> object:
    """Fallback for json.dumps: numpy/torch scalars, paths and the like."""
    if hasattr(value, "item"):
        return value.item()  # type: ignore[no-any-return, attr-defined]
    return str(value)


class ParentGone(Exception):
    """The event pipe is closed: the worker that owns this attempt is dead."""


def write_event(fd: int | None, event: EventType, **fields: object) -> None:
    """Write one whole event line to the event fd (a no-op without one); ParentGone on EPIPE."""
    if fd is None:
        return
    view = memoryview(encode(event, **fields))
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:  # BrokenPipeError: the worker closed its end by dying
        raise ParentGone(str(exc)) from exc
