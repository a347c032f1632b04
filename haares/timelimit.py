"""A worker's time limit (`haares worker --time-limit 9m`): durations, the deadline, and what may still be claimed.

Owns the rule for "can this job finish before the limit?" (see `estimate_seconds`) and applies it to what
the queue package reads for it (haares.jobs.queries.time_limit_inputs: no SQL here, no writes). The worker
acts on the answers; nothing here imports torch.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from haares.checkpoint_names import newest_step
from haares.errors import HaaresError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

SAFETY = 1.25
"""Estimates are the slowest measured seconds per step times this factor..."""
STARTUP_S = 15.0
"""...plus this much for the child's start (interpreter, torch import, data, first step)."""
HISTORY = 10
"""Attempts per config shape that the rate is taken from (the most recent ones)."""
CANDIDATES = 200
"""Queued jobs looked at per claim round, in claim order."""
# Config fields that do not change how long a step takes: runs that differ only here share a rate.
_RATE_FREE = {("seed",), ("train", "steps"), ("train", "lr"), ("data", "data_seed")}

_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_UNITS = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


def parse_duration(text: str) -> float:
    """Seconds in `text`: units ("90s", "9m", "1h30m", "1d2h") or clock form ("H:MM:SS", "MM:SS", "D-HH:MM:SS").

    A bare number is refused (Slurm reads it as minutes, most tools as seconds). HaaresError on bad input.
    """
    raw = text.strip().lower().replace(" ", "")
    seconds: float | None = None
    if ":" in raw:
        days, _, clock = raw.rpartition("-")
        parts = clock.split(":")
        if len(parts) in (2, 3) and all(p.isdigit() for p in parts) and (not days or days.isdigit()):
            values = [int(p) for p in parts]
            h, m, s = values if len(values) == 3 else [0, *values]
            seconds = int(days or 0) * 86400 + h * 3600 + m * 60 + s
    elif raw and _UNITS.sub("", raw) == "":
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _UNITS.findall(raw))
    if seconds is None or seconds <= 0:
        raise HaaresError(f"cannot read {text!r} as a duration; write it like 90s, 9m, 1h30m or 1:30:00")
    return float(seconds)


def slurm_time(seconds: float) -> str:
    """Slurm's `--time` form, D-HH:MM:SS, rounded up to whole seconds."""
    total = int(-(-seconds // 1))
    days, rest = divmod(total, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{days}-{h:02d}:{m:02d}:{s:02d}" if days else f"{h}:{m:02d}:{s:02d}"


def default_margin(limit_s: float) -> float:
    """Seconds before the limit at which running children are preempted: 60 s, at most a fifth of the limit."""
    return min(60.0, limit_s / 5)


@dataclass
class Deadline:
    """The worker's end: `limit_s` after it started. Children are preempted `margin_s` before it."""

    limit_s: float
    margin_s: float
    claim_fraction: float = 0.5
    """With no estimate for a job, claim it only while more than this fraction of the limit remains."""
    start: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if not 0 <= self.margin_s < self.limit_s:
            raise HaaresError(f"--checkpoint-margin ({self.margin_s:g} s) must be below --time-limit ({self.limit_s:g} s)")
        if not 0 <= self.claim_fraction < 1:
            raise HaaresError(f"--claim-fraction must be in [0, 1), got {self.claim_fraction:g}")

    def remaining(self, now: float | None = None) -> float:
        """Seconds until the limit itself."""
        return self.start + self.limit_s - (time.monotonic() if now is None else now)

    def usable(self, now: float | None = None) -> float:
        """Seconds a newly started child has before it is preempted."""
        return self.remaining(now) - self.margin_s

    def preempt_due(self, now: float | None = None) -> bool:
        """True from `margin_s` before the limit on: time to checkpoint and hand every job back."""
        return self.usable(now) <= 0

    def may_start(self, estimate_s: float | None, now: float | None = None) -> bool:
        """Can a job estimated at `estimate_s` (None: unknown) finish before the children are preempted?"""
        if estimate_s is None:
            return self.remaining(now) > self.claim_fraction * self.limit_s and self.usable(now) > 0
        return estimate_s <= self.usable(now)


def shape_key(config: dict[str, Any]) -> str:
    """The config without the fields that do not change a step's cost (seed, steps, lr, data seed)."""

    def strip(node: Any, path: tuple[str, ...]) -> Any:
        if not isinstance(node, dict):
            return node
        return {k: strip(v, (*path, k)) for k, v in node.items() if (*path, k) not in _RATE_FREE}

    return json.dumps(strip(config, ()), sort_keys=True)


def estimate_seconds(*, kind: str, config: dict[str, Any], remaining_steps: int,
                     seconds_per_step: float | None) -> float | None:
    """The rule: how long a job still needs, or None when nothing is known.

    Kinds of a fixed duration (haares.kinds; the tests' sleep): that duration plus one.
    Training jobs: remaining steps x the slowest measured seconds per
    step of the recent attempts of the same config shape (wall time of an attempt over the steps it did:
    start-up, evaluation and checkpoints included) x SAFETY, plus STARTUP_S; None without a measurement.
    """
    from haares.kinds import JOB_KINDS

    fixed = JOB_KINDS[kind].fixed_seconds if kind in JOB_KINDS else None
    if fixed is not None:
        return fixed(config) + 1.0
    if seconds_per_step is None:
        return None
    return STARTUP_S + SAFETY * max(0, remaining_steps) * seconds_per_step


def seconds_per_step_by_shape(timings: Iterable[Any]) -> dict[str, float]:
    """Slowest seconds per step among the HISTORY most recent attempts of each config shape, given
    attempt timings newest first (haares.jobs.queries.time_limit_inputs)."""
    seen: dict[str, list[float]] = {}
    for row in timings:
        key = shape_key(json.loads(row.config_json))
        rates = seen.setdefault(key, [])
        if len(rates) < HISTORY:
            steps = row.end_step - (row.start_step or 0)
            rates.append((row.ended_at - row.started_at).total_seconds() / steps)
    return {key: max(rates) for key, rates in seen.items()}


def claimable_ids(*, engine: Engine, deadline: Deadline, kinds: tuple[str, ...], runs_dir: Path,
                  worker: str | None = None) -> tuple[list[int], int]:
    """(ids of queued jobs that fit before the deadline, in claim order; how many queued jobs do not fit).

    A training job's remaining steps count from its newest checkpoint on this machine, not from the step
    it last reported: a checkpoint that did not travel with the queue means starting over. Given
    `worker`, only that worker's own attempts time a shape: a rate depends on the conditions it was
    measured under (GPU, the --slots sharing it, CUDA MPS, a warm compile cache), and rates from an
    earlier allocation with ten children time-slicing one GPU refused runs that took a minute here.
    """
    from haares.jobs.queries import time_limit_inputs

    queued, timings = time_limit_inputs(engine=engine, kinds=kinds, limit=CANDIDATES, worker=worker)
    rates = seconds_per_step_by_shape(timings)
    fits: list[int] = []
    for job in queued:
        config = json.loads(job.config_json)
        total = job.total_steps or int(config.get("train", {}).get("steps", 0) or 0)
        remaining = total - newest_step(runs_dir / job.run_key) if job.kind == "train" else 0
        estimate = estimate_seconds(kind=job.kind, config=config, remaining_steps=remaining,
                                    seconds_per_step=rates.get(shape_key(config)))
        if deadline.may_start(estimate):
            fits.append(job.id)
    return fits, len(queued) - len(fits)
