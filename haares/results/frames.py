"""Reports' numbers as pure functions from DataFrame to DataFrame (no SQL, no text): per-seed tables and
paired deltas (Tables 3 to 9), time-to-target (Table 12), and cost tables (Tables 10 and 11).

Vocabulary: a run is *complete* when its job succeeded and it reported at least one evaluation;
its *best* is the minimum validation loss (nats/token) over its evaluations, PPL = exp(best).
A *pair* is one seed's baseline run and method run: a paired delta exists only when both are
complete, and a mean over fewer seeds than expected is flagged, never passed off as complete.

Time-to-target: per seed, the target is the best same-seed baseline (Block AttnRes) validation loss;
the method (HAARES) reaches it at its first evaluation step with val_loss <= target. Steps become hours
with each run's own measured throughput: the mean of its evaluations' steps_per_s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from haares import cost

# --- per-seed tables and paired deltas (Tables 3 to 9) --------------------------------------------


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


# --- time-to-target (Table 12) --------------------------------------------------------------------


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


# --- cost (Tables 10 and 11): analytic source counts and Eq. 14, measured throughput and memory ---


GB = 1e9
"""Peak memory is shown in GB (10^9 bytes) of torch.cuda.max_memory_allocated, as in the paper."""


def table10_frame(
    *, n_layers: int = 48, blocks: Sequence[int] = (4, 6, 8), d_model: int = 512
) -> pd.DataFrame:
    """Table 10 plus Eq. 14: one row per (N, method), Block AttnRes then HAARES.

    Columns: method, blocks, avg_sources (mean |S| over the 2L sublayer routers), max_sources,
    and on HAARES rows delta_sources (exact mean extra sources), delta_rounded (difference of the
    2-decimal table values, the paper's Eq. 14 numerator) and flop_ratio (extra routing FLOPs over
    main-projection FLOPs at `d_model`, a fraction). Block AttnRes rows hold NaN there.
    """
    rows = []
    for n in blocks:
        bar_avg, bar_max = cost.source_stats("block_attnres", n_layers, n)
        h_avg, h_max = cost.source_stats("haares", n_layers, n)
        rows.append(("block_attnres", n, bar_avg, bar_max, np.nan, np.nan, np.nan))
        rows.append((
            "haares", n, h_avg, h_max, cost.delta_sources(n_layers, n), round(round(h_avg, 2) - round(bar_avg, 2), 2),
            cost.routing_flop_ratio(d_model, n_layers, n),
        ))
    columns = ["method", "blocks", "avg_sources", "max_sources", "delta_sources", "delta_rounded", "flop_ratio"]
    return pd.DataFrame(rows, columns=columns)


def throughput(summary: pd.DataFrame, evals: pd.DataFrame) -> pd.DataFrame:
    """Measured cost per (cell, method), over the complete runs of every seed.

    Columns: cell, method, steps_per_s and tokens_per_s (mean of the evals' window rates), peak_mem_gb
    (max of peak_mem_bytes / 1e9), train_s (training seconds of a run, the last eval's train_seconds,
    mean over runs), device (distinct devices, comma-joined), n_runs (complete runs),
    d_model, d_ff, n_layers, blocks (from the config), state (the first incomplete run's state, '' if all complete).
    """
    rows = []
    for (cell, method), group in summary.groupby(["cell", "method"], sort=False):
        done = group[group["complete"]]
        mine = evals[evals["job_id"].isin(done["job_id"])]
        devices = sorted({str(d) for d in mine["device"].dropna()})
        pending = group.loc[~group["complete"], "state"]
        first = group.iloc[0]
        rows.append({
            "cell": cell, "method": method,
            "steps_per_s": mine["steps_per_s"].mean() if len(mine) else np.nan,
            "tokens_per_s": mine["tokens_per_s"].mean() if len(mine) else np.nan,
            "peak_mem_gb": mine["peak_mem_bytes"].max() / GB if mine["peak_mem_bytes"].notna().any() else np.nan,
            "train_s": mine.groupby("job_id")["train_seconds"].max().mean() if len(mine) else np.nan,
            "device": ", ".join(devices),
            "n_runs": len(done),
            "d_model": first["d_model"], "d_ff": first["d_ff"], "n_layers": first["n_layers"], "blocks": first["blocks"],
            "state": pending.iloc[0] if len(pending) else "",
        })
    return pd.DataFrame(rows)


def overheads(tp: pd.DataFrame, *, baseline: str = "block_attnres", method: str = "haares") -> pd.DataFrame:
    """Per cell: HAARES over Block AttnRes, in %.

    mem_overhead_pct  = 100 * (peak_mem(method) / peak_mem(baseline) - 1)
    time_overhead_pct = 100 * (steps_per_s(baseline) / steps_per_s(method) - 1)   (step-time ratio)
    flop_increase_pct = 100 * cost.routing_flop_ratio(d_model, n_layers, blocks, d_ff)   (Eq. 14, analytic)
    """
    rows = []
    for cell, group in tp.groupby("cell", sort=False):
        by = group.set_index("method")
        if baseline not in by.index or method not in by.index:
            continue
        b, m = by.loc[baseline], by.loc[method]
        d_model, n_layers, blocks, d_ff = (m[k] for k in ("d_model", "n_layers", "blocks", "d_ff"))
        flops = (
            100 * cost.routing_flop_ratio(int(d_model), int(n_layers), int(blocks), d_ff=int(d_ff))
            if pd.notna(d_model) and pd.notna(n_layers) and pd.notna(blocks) and pd.notna(d_ff)
            else np.nan
        )
        rows.append({
            "cell": cell, "d_model": d_model,
            "mem_overhead_pct": 100 * (m["peak_mem_gb"] / b["peak_mem_gb"] - 1),
            "time_overhead_pct": 100 * (b["steps_per_s"] / m["steps_per_s"] - 1),
            "flop_increase_pct": flops,
        })
    return pd.DataFrame(rows, columns=["cell", "d_model", "mem_overhead_pct", "time_overhead_pct", "flop_increase_pct"])
