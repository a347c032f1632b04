"""Tables 10, 11 and 12 as Reports: analytic source counts with Eq. 14 (10), the measured cost of the
`cost` grid (11: throughput, peak memory, HAARES's overhead over Block AttnRes, analytic FLOP increase),
and time-to-target (12: the step and hours at which HAARES first reaches the best same-seed Block
AttnRes loss, against the baseline's hours for its whole budget).
"""

from __future__ import annotations

import math

import pandas as pd

from haares.grids import Grid
from haares.results import frames, paper
from haares.results.render import DASH, Report, Section, fmt, incomplete, name, with_paper_value

# --- Tables 10 and 11: cost -----------------------------------------------------------------------


TABLE10_D_MODEL = 512


def table10_report(*, with_paper: bool = False, n_layers: int = 48) -> Report:
    """The paper's Table 10 (48 layers, N = 4, 6, 8) with the Eq. 14 columns on HAARES rows."""
    data = frames.table10_frame(n_layers=n_layers, d_model=TABLE10_D_MODEL)
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
    tp = frames.throughput(summary, evals)
    over = frames.overheads(tp, baseline=baseline, method=method).set_index("cell")
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
    sections = [Section("", frame, data)]
    if set(grid.methods) - set(methods):  # a grid with more schemes than the pair: each one's own cost
        sections.append(_every_method(grid, tp, cells))
    return Report("Table 11", head + caption, sections)


def _every_method(grid: Grid, tp: pd.DataFrame, cells: list[str]) -> Section:
    """One row per (cell, method): complete runs, training seconds per run, rates and peak memory."""
    rows = []
    for cell in cells:
        here = tp[tp["cell"] == cell].set_index("method")
        for method in [m for m in frames.ordered(grid.methods, here.index) if m in here.index]:
            r = here.loc[method]
            measured = r["n_runs"] > 0
            rows.append((f"{cell} {name(method)}".strip(), {
                "Runs done": str(int(r["n_runs"])),
                "Train s / run": fmt(r["train_s"], 1) if measured else r["state"] or DASH,
                "Steps/s": fmt(r["steps_per_s"], 2) if measured else DASH,
                "Tokens/s (K)": fmt(r["tokens_per_s"] / 1000, 1) if measured else DASH,
                "Peak mem GB": fmt(r["peak_mem_gb"], 2) if measured else DASH,
            }))
    frame = pd.DataFrame([r for _, r in rows], index=pd.Index([k for k, _ in rows], name="Run"))
    notes = ["train s = training time of a run (warm-up, compilation and evaluation excluded), mean over its "
             "complete runs; rates as above, measured under whatever else shared the GPU (worker --slots)"]
    return Section("every method", frame, tp, notes)


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


# --- Table 12: time-to-target ---------------------------------------------------------------------


def steps_text(step: float, *, mean: bool = False) -> str:
    """24000 -> '24K', a mean 19333 -> '19.3K', under 1000 -> plain integer steps."""
    if step is None or math.isnan(step):
        return DASH
    if step < 1000:
        return f"{step:.0f}" if not mean else f"{step:.1f}"
    return f"{step / 1000:.1f}K" if mean else f"{step / 1000:g}K"


def hours_text(hours: float) -> str:
    """Hours with 2 decimals (the paper's 3.90 h); 4 decimals under 0.1 h, so tiny runs show something."""
    return fmt(hours, 2 if hours is None or math.isnan(hours) or hours >= 0.1 else 4)


def run_rates(summary: pd.DataFrame, evals: pd.DataFrame) -> pd.DataFrame:
    """Per complete run: cell, seed, method, steps_per_s (mean of its evals' window rates, else the
    job's last reported rate) and budget_steps (its config's train.steps)."""
    done = summary[summary["complete"]].copy()
    measured = frames.measured_steps_per_s(evals)
    done["steps_per_s"] = done["job_id"].map(measured).fillna(done["steps_per_s"]).astype("float64")
    done["budget_steps"] = done["budget_steps"].fillna(done["total_steps"]).astype("float64")
    return done[["cell", "seed", "method", "job_id", "steps_per_s", "budget_steps"]]


def table12_report(grid: Grid, summary: pd.DataFrame, evals: pd.DataFrame, caption: list[str], *, with_paper: bool) -> Report:
    """Per cell: rows = seeds then mean; the paper's Table 12 columns."""
    baseline, method = grid.baseline, "haares"
    rates = run_rates(summary, evals)
    complete_evals = evals[evals["job_id"].isin(rates["job_id"])]
    sections = []
    for cell in frames.ordered(grid.cells, summary["cell"]):
        part = summary[summary["cell"] == cell]
        per_seed = frames.time_to_target(
            complete_evals[complete_evals["cell"] == cell], rates[rates["cell"] == cell], baseline=baseline, method=method
        ).set_index("seed")
        seeds = frames.ordered(grid.seeds, part["seed"])
        rows = []
        for seed in seeds:
            stated = paper.TABLE12_SEEDS.get(seed, {}) if with_paper and grid.name == "main48" else {}
            if seed not in per_seed.index:
                rows.append((str(seed), _pending_row(part, seed, baseline, method)))
                continue
            rows.append((str(seed), _row(per_seed.loc[seed], stated, baseline, mean=False)))
        mean = frames.ttt_mean(per_seed.reset_index()) if len(per_seed) else None
        if mean is not None:
            stated = paper.TABLE12_MEAN if with_paper and grid.name == "main48" else {}
            flag = incomplete(mean["n_reached"], mean["n_seeds"], "seeds reached")
            flag += incomplete(mean["n_seeds"], len(seeds), "seeds complete")
            rows.append(("mean", _row(pd.Series(mean), stated, baseline, mean=True, flag=flag)))
        frame = pd.DataFrame([r for _, r in rows], index=pd.Index([s for s, _ in rows], name="Seed"))
        data = per_seed.reset_index().assign(cell=cell)
        sections.append(Section(f"cell {cell}" if cell else "", frame, data))
    every = sorted({int(v) for v in summary["eval_every"].dropna()})
    head = [
        f"Table 12 rebuilt from grid {grid.name}: time for {name(method)} to reach the best same-seed {name(baseline)} loss",
        f"target = best {name(baseline)} val loss of the seed; {name(method)} step = first eval at or below it, an upper "
        f"bound on the first crossing (evals every {' / '.join(f'{e:,}' for e in every) or '?'} steps)",
        f"hours = steps / measured steps/s / 3600, measured steps/s = mean of the run's eval-window rates; "
        f"{name(baseline)} hours use its full budget of steps",
        "saved = baseline hours − method hours, % of baseline hours; means of step, val, hours and saved are over seeds "
        "that reached the target",
    ]
    if with_paper and grid.name == "main48":
        head.append(
            f"[paper x]: the paper's Table 12 ({paper.TABLE12_BASELINE_STEPS_PER_S} / {paper.TABLE12_METHOD_STEPS_PER_S} "
            f"steps/s, baseline {paper.TABLE12_BASELINE_HOURS} h from unrounded throughputs; "
            f"30,000 / 2.08 / 3600 = {30_000 / 2.08 / 3600:.3f} h)"
        )
    return Report("Table 12", head + caption, sections)


def _rate_columns(baseline: str) -> tuple[str, str]:
    """The steps/s and hours column names, which say which run is the baseline: the paper's
    "BAR / HAARES" for Block AttnRes, the baseline's own name in grids with another (golf: Standard)."""
    short = "BAR" if baseline == "block_attnres" else name(baseline)
    return f"Steps/s ({short} / HAARES)", f"Time h ({short} → HAARES)"


def _row(r: pd.Series, stated: dict, baseline: str, *, mean: bool, flag: str = "") -> dict[str, str]:
    """Display cells of one seed (or of the mean row, with `flag` marking an incomplete mean)."""
    rate_column, time_column = _rate_columns(baseline)
    reached = bool(r["n_reached"]) if mean else bool(r["reached"])
    step = (steps_text(r["step"], mean=mean) if reached else "not reached") + flag
    if stated.get("step") is not None:
        step += f" [paper {steps_text(stated['step'], mean=mean)}]"
    time_text = f"{hours_text(r['baseline_hours'])} → {hours_text(r['method_hours']) if reached else 'not reached'}"
    return {
        "Target": with_paper_value(fmt(r["target"]), stated.get("target")),
        "HAARES step": step,
        "HAARES val": with_paper_value(fmt(r["val"]) if reached else DASH, stated.get("val")),
        rate_column: f"{fmt(r['baseline_steps_per_s'], 2)} / {fmt(r['method_steps_per_s'], 2)}",
        time_column: with_paper_value(time_text, stated.get("hours"), 2),
        "Saved h": hours_text(r["saved_hours"]) if reached else DASH,
        "Saved %": with_paper_value(fmt(r["saved_pct"], 1) if reached else DASH, stated.get("saved_pct"), 1),
    }


def _pending_row(part: pd.DataFrame, seed: int, baseline: str, method: str) -> dict[str, str]:
    """A seed without both runs complete: say which run is in which state."""
    states = []
    for m in (baseline, method):
        found = part[(part["seed"] == seed) & (part["method"] == m)]
        state = "not enqueued" if found.empty else (found["state"].iloc[0] or "complete")
        states.append(f"{name(m)}: {state}")
    rate_column, time_column = _rate_columns(baseline)
    return {"Target": "; ".join(states), "HAARES step": DASH, "HAARES val": DASH, rate_column: DASH,
            time_column: DASH, "Saved h": DASH, "Saved %": DASH}
