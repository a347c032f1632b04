"""Metric sinks: where a run's curves go besides evals.jsonl and the queue (TensorBoard today).

One small interface, `MetricSink`, and what every sink is told about its run (`RunInfo`). A sink is
one file (tensorboard.py); W&B or MLflow would be one more. `GuardedSinks` fans calls out and turns
a failing sink into a warning, so a sink can never stop training. Imports no torch.
"""

from haares.sinks.base import MetricSink, RunInfo, RunLabel
from haares.sinks.guard import GuardedSinks, default_sinks

__all__ = ["GuardedSinks", "MetricSink", "RunInfo", "RunLabel", "default_sinks"]
