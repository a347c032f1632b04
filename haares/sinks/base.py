"""The sink interface: what a sink is told about its run (RunInfo, RunLabel) and the calls it receives (MetricSink)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from haares.train import EvalPoint


@dataclass(frozen=True)
class RunLabel:
    """One grid's name for a run; a run shared by several grids has one label per grid."""

    grid: str
    cell: str
    """"" for a grid without cells."""
    method: str
    seed: int


@dataclass(frozen=True)
class RunInfo:
    """What a sink knows about the run it records."""

    run_key: str
    run_dir: Path
    """The run directory (checkpoints, evals.jsonl); sinks keep their files under it."""
    home: Path
    """The results home (haares.settings.home()), for views across runs."""
    labels: tuple[RunLabel, ...] = field(default_factory=tuple)


class MetricSink(Protocol):
    """Receives a run's metrics. Steps are optimizer steps; a resumed run calls `open` again.

    open(run, resume_step): start or continue the run's record. Everything a sink holds for steps
    after `resume_step` came from a crashed or stopped attempt and must be dropped or hidden, since
    the resumed run reports those steps again (0: a fresh start, drop everything).
    """

    def open(self, run: RunInfo, resume_step: int) -> None: ...

    def log_eval(self, point: EvalPoint) -> None:
        """One evaluation (val loss, PPL, bits per byte, the window's train loss, tokens/s, grad norm, memory)."""

    def log_train(self, step: int, metrics: dict[str, float]) -> None:
        """Throttled training progress: {"loss": latest step loss, "tokens_per_s": window rate}."""

    def close(self) -> None:
        """Flush and release; the run may be opened again later (resume)."""

