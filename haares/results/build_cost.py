"""Tables 10 and 11 as Reports: analytic source counts with Eq. 14, and measured cost of the
`cost` grid (throughput, peak memory, HAARES's overhead over Block AttnRes, analytic FLOP increase).
"""

from __future__ import annotations

import math

import pandas as pd

from haares.grids import Grid
from haares.results import cost_tables, paper
from haares.results.cells import DASH, fmt, name
from haares.results.render import Report, Section

TABLE10_D_MODEL = 512


def table10_report(*, with_paper: bool = False, n_layers: int = 48) -> Report:
    """The paper's Table 10 (48 layers, N = 4, 6, 8) with the Eq. 14 columns on HAARES rows."""
    data = cost_tables.table10_frame(n_layers=n_layers, d_model=TABLE10_D_MODEL)
    rows = []
    for r in data.itertuples(index=False):
        row = {
            "N": str(r.blocks),
            "Avg. src.": f"{r.avg_sources:.2f}",
            "Max src.": str(int(r.max_sources)),
            "ΔS̄ (Eq. 14)": DASH if math.isnan(r.delta_rounded) else f"{r.delta_rounded:.2f}",
            f"routing FLOPs +% (d={TABLE10_D_MODEL})": DASH if math.isnan(r.flop_ratio) else f"{100 * r.flop_ratio:.2f}%",
        }
        if with_paper:
            avg, mx = paper.TABLE10[(r.method, r.blocks)]
            row["paper avg / max"] = f"{avg:.2f} / {mx}"
        rows.append((name(r.method), row))
    frame = pd.DataFrame([r for _, r in rows], index=pd.Index([m for m, _ in rows], name="Method"))
    caption = [
        f"Source counts at {n_layers} layers: |S| averaged over the {2 * n_layers} sublayer routers (final readout excluded) "
        "and its maximum; analytic, no runs needed",
        "ΔS̄ = HAARES avg − Block AttnRes avg of the 2-decimal table values (the paper's Eq. 14 numerator); "
        f"routing FLOPs +% = extra routing arithmetic over main-projection FLOPs at d={TABLE10_D_MODEL} "
        "(haares.cost.routing_flop_ratio, kappa = 8 FLOPs·d per source, an assumption)",
    ]
    return Report("Table 10", caption, [Section("", frame, data)])


def table11_report(grid: Grid, summary: pd.DataFrame, evals: pd.DataFrame, caption: list[str], *, with_paper: bool) -> Report:
    """Per cell (width): peak memory, tokens/s, steps/s of both routers, overheads and FLOP increase."""
    baseline, method = grid.baseline, "haares"
    tp = cost_tables.throughput(summary, evals)
    over = cost_tables.overheads(tp, baseline=baseline, method=method).set_index("cell")
    cells = [c for c in grid.cells if c in set(tp["cell"])] + sorted(set(tp["cell"]) - set(grid.cells))
    methods = (baseline, method)
    rows = []
    for cell in cells:
        part = tp[tp["cell"] == cell].set_index("method")

        o = over.loc[cell] if cell in over.index else None
        d_model = part["d_model"].iloc[0]
        row = {
            "Peak mem GB": _pair(part, "peak_mem_gb", lambda v: f"{v:.2f}", methods),
            "Mem +%": DASH if o is None else fmt(o["mem_overhead_pct"], 1),
            "Tokens/s (K)": _pair(part, "tokens_per_s", lambda v: f"{v / 1000:.1f}", methods),
            "Steps/s": _pair(part, "steps_per_s", lambda v: f"{v:.2f}", methods),
            "Time +%": DASH if o is None else fmt(o["time_overhead_pct"], 1),
            "FLOPs +%": DASH if o is None else fmt(o["flop_increase_pct"], 2),
            "Device": ", ".join(sorted({d for d in part["device"] if d})) or DASH,
        }
        if with_paper:
            stated = paper.TABLE11.get(cell, {})
            row["paper mem / time +%"] = " / ".join(
                fmt(stated[k], 0) if k in stated else DASH for k in ("mem_overhead_pct", "time_overhead_pct")
            )
        label = f"{cell} (d={int(d_model)})" if cell and pd.notna(d_model) else (cell or f"d={d_model}")
        rows.append((label, row))
    frame = pd.DataFrame([r for _, r in rows], index=pd.Index([c for c, _ in rows], name="Config."))
    head = [
        f"Table 11 rebuilt from grid {grid.name}: {grid.description}",
        f"pairs are {name(baseline)} / {name(method)}; throughput = mean of the evals' window rates; "
        "peak memory = max over evals of torch.cuda.max_memory_allocated (GB = 1e9 bytes)",
        f"Mem +% = HAARES / {name(baseline)} peak memory − 1; Time +% = step-time ratio − 1; "
        "FLOPs +% = analytic Eq. 14 routing FLOPs (haares.cost.routing_flop_ratio)",
    ]
    if with_paper:
        head.append(f"paper: memory overhead 33% at d=128, 15% at d=768; time overhead 17% at d=768; "
                    f"analytic FLOPs below {paper.TABLE11_FLOPS_BELOW_PCT}%")
    data = tp.merge(over.reset_index()[["cell", "mem_overhead_pct", "time_overhead_pct", "flop_increase_pct"]],
                    on="cell", how="left")
    return Report("Table 11", head + caption, [Section("", frame, data)])


def _pair(part: pd.DataFrame, column: str, show, methods: tuple[str, str]) -> str:
    """'baseline / method' values of `column` in one cell, or each run's state where not complete."""
    shown = []
    for m in methods:
        if m not in part.index:
            shown.append("not enqueued")
        elif part.loc[m, "state"] or math.isnan(part.loc[m, column]):
            shown.append(part.loc[m, "state"] or DASH)
        else:
            shown.append(show(part.loc[m, column]))
    return " / ".join(shown)
