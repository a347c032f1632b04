"""Tables 10 and 11 as DataFrames: analytic source counts and Eq. 14 (from haares.cost), and the
measured throughput and memory of the `cost` grid with HAARES's overhead over Block AttnRes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from haares import cost

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
    (max of peak_mem_bytes / 1e9), device (distinct devices, comma-joined), n_runs (complete runs),
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
