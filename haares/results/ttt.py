"""Time-to-target (the paper's Table 12) as pure functions on DataFrames.

Per seed, the target is the best same-seed baseline (Block AttnRes) validation loss; the method
(HAARES) reaches it at its first evaluation step with val_loss <= target. Steps become hours with
each run's own measured throughput: the mean of its evaluations' steps_per_s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TTT_COLUMNS = (
    "seed", "target", "step", "val", "reached", "baseline_steps_per_s", "method_steps_per_s",
    "budget_steps", "baseline_hours", "method_hours", "saved_hours", "saved_pct",
)


def measured_steps_per_s(evals: pd.DataFrame) -> pd.Series:
    """A run's measured steps/s: the mean of its evaluations' steps_per_s, indexed by job_id.

    Each evaluation records the rate over the window since the previous one. The arithmetic mean
    of the window rates is the documented choice (docs/reports.md); over equal-step windows the
    exact overall rate would be their harmonic mean, which differs only when windows vary.
    """
    return evals.groupby("job_id")["steps_per_s"].mean()


def time_to_target(
    evals: pd.DataFrame,
    rates: pd.DataFrame,
    *,
    baseline: str = "block_attnres",
    method: str = "haares",
) -> pd.DataFrame:
    """One row per seed that has evaluations of both `baseline` and `method`.

    evals: seed, method, step, val_loss (complete runs only). rates: seed, method, steps_per_s,
    budget_steps (one row per run). Columns of the result:
      target              best baseline val loss of that seed (nats/token)
      step                first method eval step with val_loss <= target; an upper bound on the first
                          crossing, since the loss is only seen every eval interval; NaN if not reached
      val                 method val loss at that step
      reached             whether the method reached the target within its recorded evals
      baseline_steps_per_s, method_steps_per_s   measured throughputs (steps/s)
      budget_steps        the baseline's full budget of steps
      baseline_hours      budget_steps / baseline_steps_per_s / 3600
      method_hours        step / method_steps_per_s / 3600
      saved_hours         baseline_hours - method_hours;  saved_pct = 100 * saved_hours / baseline_hours
    """
    rate = rates.set_index(["seed", "method"])
    rows = []
    seeds = sorted(set(evals.loc[evals["method"] == baseline, "seed"]) & set(evals.loc[evals["method"] == method, "seed"]))
    for seed in seeds:
        base = evals[(evals["seed"] == seed) & (evals["method"] == baseline)]
        mine = evals[(evals["seed"] == seed) & (evals["method"] == method)].sort_values("step")
        target = float(base["val_loss"].min())
        hit = mine[mine["val_loss"] <= target]
        reached = not hit.empty
        step = float(hit["step"].iloc[0]) if reached else np.nan
        val = float(hit["val_loss"].iloc[0]) if reached else np.nan
        base_rate = float(rate.loc[(seed, baseline), "steps_per_s"])
        my_rate = float(rate.loc[(seed, method), "steps_per_s"])
        budget = float(rate.loc[(seed, baseline), "budget_steps"])
        base_hours = budget / base_rate / 3600
        my_hours = step / my_rate / 3600
        saved = base_hours - my_hours
        rows.append((seed, target, step, val, reached, base_rate, my_rate, budget, base_hours, my_hours,
                     saved, 100 * saved / base_hours))
    return pd.DataFrame(rows, columns=list(TTT_COLUMNS))


def ttt_mean(per_seed: pd.DataFrame) -> dict[str, float | int]:
    """The mean row: target and baseline figures over every seed, the rest over reached seeds.

    n_seeds and n_reached say how many seeds each mean covers (a mean over fewer reached seeds
    than seeds must be shown as such).
    """
    reached = per_seed[per_seed["reached"]]
    out: dict[str, float | int] = {"n_seeds": len(per_seed), "n_reached": len(reached)}
    for column in ("target", "baseline_steps_per_s", "method_steps_per_s", "baseline_hours"):
        out[column] = float(per_seed[column].mean())
    for column in ("step", "val", "method_hours", "saved_hours", "saved_pct"):
        out[column] = float(reached[column].mean()) if len(reached) else float("nan")
    return out
