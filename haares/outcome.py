"""How a child's end maps to a queue outcome: a pure function of its exit code, events and stop reason.

Separate from the worker so that the policy reads (and is tested) without processes or a database.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

from haares.protocol import EXIT_DEVICE, EXIT_OK, EXIT_OUT_OF_MEMORY, EXIT_PREEMPTED, EXIT_TERMINAL


@dataclass(frozen=True)
class Outcome:
    """What haares.jobs.finish records for one attempt."""

    outcome: str
    """succeeded, failed, preempted or cancelled (haares.jobs.lease.OUTCOMES)."""
    exit_code: int | None
    end_step: int | None
    result: dict | None = None
    error: str | None = None
    terminal: bool = False
    """A failure not worth a retry (haares.protocol.EXIT_TERMINAL)."""

    def finish_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of haares.jobs.finish, besides engine and lease."""
        return dict(outcome=self.outcome, exit_code=self.exit_code, end_step=self.end_step, result=self.result,
                    error=self.error, terminal=self.terminal)


def outcome_of(
    exit_code: int | None,
    *,
    result: dict | None,
    error: str | None,
    stop_reason: str | None,
    preempted_step: int | None,
    checkpoint_step: int | None,
    last_log_line: str | None = None,
    device_shared_with: int = 0,
) -> Outcome:
    """The outcome of a child that exited with `exit_code` (negative: killed by that signal).

    `result`, `error`, `preempted_step` and `checkpoint_step` come from its events (haares.protocol);
    `stop_reason` is why the worker stopped it, if it did ("cancel", "preempt", "db_down", "lost");
    `last_log_line` stands in for an error the child did not send. A child stopped for preemption or a
    database outage that sent no result is preempted, whatever its exit code: the worker asked it to end.
    `device_shared_with` counts the worker's other children on the same GPU when this one ended: a CUDA
    out-of-memory beside them may be theirs, so the job goes back to the queue without using a retry
    (the worker then runs fewer at once); alone on the GPU, the run does not fit and retrying cannot help.
    """
    end_step = preempted_step if preempted_step is not None else checkpoint_step
    if exit_code == EXIT_OK and result is not None:
        final = result.get("final_step")
        return Outcome("succeeded", exit_code, final if final is not None else end_step, result=result)
    if stop_reason == "cancel":
        return Outcome("cancelled", exit_code, end_step, error="cancelled by request")
    if exit_code == EXIT_PREEMPTED or (stop_reason in ("preempt", "db_down") and result is None):
        why = "worker stopped" if stop_reason == "preempt" else "database unreachable"
        return Outcome("preempted", exit_code, end_step, error=f"preempted ({why})")
    if exit_code == EXIT_DEVICE:
        return Outcome("failed", exit_code, end_step, error=error or "the child's device is not the worker's")
    if exit_code == EXIT_OUT_OF_MEMORY:
        oom = error or "CUDA out of memory"
        if device_shared_with > 0:
            return Outcome("preempted", exit_code, end_step,
                           error=f"{oom} (beside {device_shared_with} other run(s) on the GPU; requeued, "
                                 "no retry used)")
        return Outcome("failed", exit_code, end_step, terminal=True,
                       error=f"{oom} (alone on the GPU: this run does not fit it; use a smaller batch or model)")
    if exit_code == EXIT_TERMINAL:
        return Outcome("failed", exit_code, end_step, terminal=True,
                       error=error or last_log_line or "terminal failure")
    if exit_code is not None and exit_code < 0:
        message = f"killed by signal {signal.Signals(-exit_code).name}"
    elif exit_code == EXIT_OK:
        message = "child exited 0 without reporting a result"
    else:
        message = error or last_log_line or f"exit code {exit_code}"
    return Outcome("failed", exit_code, end_step, error=message)


def slots_after_out_of_memory(exit_code: int | None, *, slots: int, shared_with: int) -> int:
    """The worker's slot count after a child ended with `exit_code` beside `shared_with` others.

    A CUDA out-of-memory on a shared GPU means the GPU holds fewer runs than --slots asked for: at most
    one fewer than were running together (never below one). Any other end leaves `slots` as it was.
    """
    if exit_code != EXIT_OUT_OF_MEMORY or shared_with == 0 or slots <= 1:
        return slots
    return max(1, min(slots, shared_with + 1) - 1)
