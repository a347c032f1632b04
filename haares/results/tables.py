"""Per-seed tables and paired deltas: pure functions from DataFrame to DataFrame (no SQL, no text).

Vocabulary: a run is *complete* when its job succeeded and it reported at least one evaluation;
its *best* is the minimum validation loss (nats/token) over its evaluations, PPL = exp(best).
A *pair* is one seed's baseline run and method run: a paired delta exists only when both are
complete, and a mean over fewer seeds than expected is flagged, never passed off as complete.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

LABELS = ["cell", "method", "seed"]


def latest_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the newest job (highest job_id) per (cell, method, seed) label.

    A grid enqueued twice with different options (say `--steps`) holds two jobs under one label;
    the report shows the latest. Returns (kept runs, number of older jobs left out).
    """
    if runs.empty:
        return runs.copy(), 0
    kept = runs.sort_values("job_id").drop_duplicates(LABELS, keep="last")
    return kept.sort_values(["cell", "method", "seed"]).reset_index(drop=True), len(runs) - len(kept)


def state_label(status: str, step: int, n_evals: int) -> str:
    """What a cell shows instead of a number: '' for a complete run, else its state.

    'queued', 'queued @ step k' (a handed-back run that will resume), 'running @ step k', 'failed',
    'cancelled', 'held', or 'no evals' for a succeeded run that recorded none.
    """
    if status == "succeeded":
        return "" if n_evals else "no evals"
    if status in ("running", "queued") and step:
        return f"{status} @ step {int(step)}"
    return str(status)


def run_summary(runs: pd.DataFrame, evals: pd.DataFrame) -> pd.DataFrame:
    """`runs` plus best (min eval val_loss, NaN without evals), ppl, n_evals, complete and state,
    and best_bpb: val_bpb of the evaluation with the best loss (NaN where evals carry no val_bpb)."""
    if evals.empty:
        per_job = pd.DataFrame(columns=["job_id", "best", "n_evals", "best_bpb"])
    else:
        per_job = evals.groupby("job_id").agg(best=("val_loss", "min"), n_evals=("val_loss", "size")).reset_index()
        if "val_bpb" in evals:
            at_best = evals.loc[evals.groupby("job_id")["val_loss"].idxmin(), ["job_id", "val_bpb"]]
            per_job = per_job.merge(at_best.rename(columns={"val_bpb": "best_bpb"}), on="job_id", how="left")
        else:
            per_job["best_bpb"] = np.nan
    out = runs.merge(per_job, on="job_id", how="left")
    out["best"] = out["best"].astype("float64")
    out["best_bpb"] = out["best_bpb"].astype("float64")
    out["n_evals"] = out["n_evals"].fillna(0).astype(int)
    out["complete"] = (out["status"] == "succeeded") & out["best"].notna()
    out["state"] = [state_label(s, k, n) for s, k, n in zip(out["status"], out["step"], out["n_evals"], strict=True)]
    out.loc[~out["complete"], ["best", "best_bpb"]] = np.nan
    out["ppl"] = np.exp(out["best"])
    return out


def ordered(preferred: Iterable, present: Iterable) -> list:
    """`preferred` in its order, then anything else in `present` (sorted), without duplicates."""
    first = list(dict.fromkeys(preferred))
    rest = sorted({p for p in present if p not in first}, key=str)
    return first + rest


def seed_frames(
    summary: pd.DataFrame, *, methods: Sequence[str], seeds: Sequence[int]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Wide frames for one cell: rows = seeds, columns = methods.

    Returns (best, state): best is the float best loss (NaN unless complete); state is '' for a
    complete run, its state otherwise, and 'not enqueued' where the database has no such run.
    """
    # Plain dicts, not pivot: a report builds dozens of these tiny frames and pandas' per-call
    # overhead dominated (benchmarks/report.py).
    best = {m: dict.fromkeys(seeds, np.nan) for m in methods}
    state = {m: dict.fromkeys(seeds, "not enqueued") for m in methods}
    for method, seed, value, label in zip(
        summary["method"], summary["seed"], summary["best"], summary["state"], strict=True
    ):
        if method in best and seed in best[method]:
            best[method][seed], state[method][seed] = value, label
    index = pd.Index(list(seeds), name="seed")
    return (
        pd.DataFrame(best, index=index, columns=list(methods), dtype="float64"),
        pd.DataFrame(state, index=index, columns=list(methods), dtype=object),
    )


def column_stats(values: pd.DataFrame) -> pd.DataFrame:
    """Per column of a seeds x methods frame: mean, std (sample, ddof=1), n (non-NaN), expected (rows).

    Rows are methods. std is NaN with fewer than two values. The mean is over the n values present;
    callers flag it when n < expected.
    """
    return pd.DataFrame(
        {
            "mean": values.mean(axis=0, skipna=True),
            "std": values.std(axis=0, ddof=1, skipna=True),
            "n": values.notna().sum(axis=0).astype(int),
            "expected": len(values.index),
        }
    )


def paired_deltas(best: pd.DataFrame, *, baseline: str) -> pd.DataFrame:
    """Per seed, method - baseline for every other method; NaN unless both runs are complete."""
    others = [m for m in best.columns if m != baseline]
    if baseline not in best.columns:
        return pd.DataFrame(np.nan, index=best.index, columns=others, dtype="float64")
    return best[others].sub(best[baseline], axis=0)


def delta_stats(deltas: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean, std of the paired deltas, n complete pairs, expected pairs, n_lower, n_higher,
    and sign_holds: True when every expected pair is complete and all deltas share one strict sign,
    False when complete pairs disagree (or one is exactly 0), None while pairs are missing.
    """
    stats = column_stats(deltas)
    stats["n_lower"] = (deltas < 0).sum(axis=0).astype(int)
    stats["n_higher"] = (deltas > 0).sum(axis=0).astype(int)
    mixed = (stats["n"] > 0) & (((stats["n_lower"] > 0) & (stats["n_higher"] > 0))
                                | (stats["n_lower"] + stats["n_higher"] < stats["n"]))
    # Already mixed means False even with pairs missing: more seeds cannot restore consistency.
    holds = [False if m else (None if n == 0 or n < e else True)
             for m, n, e in zip(mixed, stats["n"], stats["expected"], strict=True)]
    stats["sign_holds"] = pd.Series(holds, index=stats.index, dtype=object)
    return stats
