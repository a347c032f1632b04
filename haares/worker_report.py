"""What a worker tells its user while it runs, and the summary it returns (the CLI renders both)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from haares.worker_child import Running

log = logging.getLogger("haares.worker")


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
