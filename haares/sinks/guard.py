"""GuardedSinks: several sinks behind one set of train() callbacks; a sink that fails is warned about and dropped.

Training results live in checkpoints, evals.jsonl and the queue; sinks are views. So a sink error
(a full disk, a missing package, a dead W&B server) costs that sink's curves, never the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from haares.sinks.base import MetricSink, RunInfo
    from haares.train import EvalPoint, TrainCallbacks

log = logging.getLogger("haares.sinks")


class GuardedSinks:
    """Fan-out to `sinks`. The first exception of a sink logs a warning and drops that sink for the run."""

    def __init__(self, sinks: list[MetricSink], run: RunInfo) -> None:
        self.sinks = list(sinks)
        self.run = run

    def _each(self, what: str, call: Callable[[MetricSink], Any]) -> None:
        for sink in list(self.sinks):
            try:
                call(sink)
            except Exception as exc:  # noqa: BLE001 - any sink failure is a warning, never a training failure
                log.warning("metric sink %s failed in %s and is off for this run: %s: %s",
                            type(sink).__name__, what, type(exc).__name__, exc)
                self.sinks.remove(sink)
                try:
                    sink.close()
                except Exception:  # noqa: BLE001 - already reported; a second error adds nothing
                    pass

    def open(self, resume_step: int) -> None:
        self._each("open", lambda s: s.open(self.run, resume_step))

    def log_eval(self, point: EvalPoint) -> None:
        self._each("log_eval", lambda s: s.log_eval(point))

    def log_train(self, step: int, metrics: dict[str, float]) -> None:
        self._each("log_train", lambda s: s.log_train(step, metrics))

    def close(self) -> None:
        self._each("close", lambda s: s.close())

    def wrap(self, callbacks: TrainCallbacks) -> TrainCallbacks:
        """`callbacks` with the sinks in front: opened at train()'s on_start, fed by on_eval and on_progress.

        Sinks are called before the caller's hooks, so a hook that ends the process (a crash test,
        a dying worker) still finds the step's metrics written.
        """

        def on_start(step: int) -> None:
            self.open(step)
            if callbacks.on_start:
                callbacks.on_start(step)

        def on_eval(point: EvalPoint) -> None:
            self.log_eval(point)
            if callbacks.on_eval:
                callbacks.on_eval(point)

        def on_progress(step: int, loss: float, tokens_per_s: float) -> None:
            self.log_train(step, {"loss": loss, "tokens_per_s": tokens_per_s})
            if callbacks.on_progress:
                callbacks.on_progress(step, loss, tokens_per_s)

        return replace(callbacks, on_start=on_start, on_eval=on_eval, on_progress=on_progress)


def default_sinks(run: RunInfo) -> GuardedSinks:
    """The sinks every run writes: TensorBoard. Add a W&B or MLflow sink here."""
    from haares.sinks.tensorboard import TensorBoardSink

    return GuardedSinks([TensorBoardSink()], run)
