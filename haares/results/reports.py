"""Which grid each paper table (3 to 12) reads, and building that table as a Report; Tables 3 to 9 here.

Loads the grid once (load.py, the only SQL), keeps the newest job per label, summarises each run
(frames.py) and builds the table's shape: seeds x methods with paired deltas here (3-9), cost and
time-to-target in reports_cost.py (10, 11, 12). Formats are render.py's.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from haares.errors import HaaresError
from haares.grids import Grid, get_grid
from haares.results import frames, paper
from haares.results.render import (
    DASH,
    Report,
    Section,
    fmt,
    incomplete,
    name,
    settings_caption,
    with_paper_value,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine


TABLE_GRIDS: dict[int, str | None] = {
    3: "depth", 4: "main48", 5: "large453", 6: "bpe48", 7: "blocks", 8: "ablations", 9: "domains",
    10: None, 11: "cost", 12: "main48",
}


def check_table(table: int) -> None:
    """Raise a one-line HaaresError for a table number the paper does not have."""
    if table not in TABLE_GRIDS:
        raise HaaresError(f"unknown table {table}; the paper's tables are 3 to 12 (try `haares report --table 4`)")


def grid_for(table: int | None, grid: str | None) -> Grid | None:
    """The grid a table reads (`grid` overrides the default); None for the analytic Table 10.

    `table` None asks for the grid's own report (seeds x methods), so `grid` is then required.
    """
    if table is None:
        if not grid:
            raise HaaresError("pass --table N (a paper table, 3 to 12) or --grid NAME (that grid's own report)")
        return get_grid(grid)
    check_table(table)
    if table == 10:
        if grid:
            raise HaaresError("table 10 is analytic (source counts, Eq. 14) and reads no runs; drop --grid")
        return None
    return get_grid(grid or TABLE_GRIDS[table])


def load_grid(engine: Engine, grid: Grid) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(run summary, evals, caption lines) of the newest job per label of `grid`."""
    from haares.results import load  # SQLAlchemy and the schema: not needed by the analytic Table 10

    total = load.count_runs(engine, grid.name)
    if total == 0:
        raise HaaresError(f"no runs of grid {grid.name} in DB; enqueue with `haares enqueue --grid {grid.name}`")
    # Only the newest job per label is read (in SQL): older versions of a label cost nothing.
    runs, _ = frames.latest_runs(load.load_runs(engine, grid.name, newest=True))
    evals = load.load_evals(engine, grid.name, newest=True)
    return frames.run_summary(runs, evals), evals, settings_caption(runs, total - len(runs))


def build_report(engine: Engine | None, table: int | None, grid: Grid | None, *, with_paper: bool = False) -> Report:
    """Table `table` rebuilt from the database behind `engine` (neither is used for Table 10)."""
    if table == 10:
        from haares.results.reports_cost import table10_report

        return table10_report(with_paper=with_paper)
    assert grid is not None and engine is not None
    summary, evals, caption = load_grid(engine, grid)
    if table == 11:
        from haares.results.reports_cost import table11_report

        return table11_report(grid, summary, evals, caption, with_paper=with_paper)
    if table == 12:
        from haares.results.reports_cost import table12_report

        return table12_report(grid, summary, evals, caption, with_paper=with_paper)
    return seed_report(table, grid, summary, caption, with_paper=with_paper)


# --- Tables 3 to 9: per cell, seeds x methods best loss / PPL, paired deltas, a by-cell overview --


def seed_report(
    table: int | None, grid: Grid, summary: pd.DataFrame, caption: list[str], *, with_paper: bool
) -> Report:
    """Per cell: a seeds x methods table of best loss / PPL with mean and std, and paired deltas;
    with grid.report_bpb, the same two for bits per byte. `table` None: the grid's own report."""
    methods = frames.ordered(grid.methods, summary["method"])
    seeds = frames.ordered(grid.seeds, summary["seed"])
    cells = frames.ordered(grid.cells, summary["cell"])
    sections: list[Section] = []
    overview = []
    by_cell = dict(iter(summary.groupby("cell", sort=False)))
    for cell in cells:
        part = by_cell.get(cell, summary.iloc[0:0])
        best, state = frames.seed_frames(part, methods=methods, seeds=seeds)
        stats = frames.column_stats(best)
        deltas = frames.paired_deltas(best, baseline=grid.baseline)
        dstats = frames.delta_stats(deltas)
        key = (grid.name, cell)
        label = f"cell {cell}: " if cell else ""
        sections.append(_loss_section(f"{label}best validation loss / PPL", best, state, stats, key, with_paper))
        if not deltas.columns.empty:
            sections.append(_delta_section(f"{label}paired Δ vs {name(grid.baseline)}", deltas, dstats, key, with_paper))
        if grid.report_bpb:
            sections += _bpb_sections(label, part, methods, seeds, grid.baseline, key)
        overview.append((cell, stats, dstats))
    if len(cells) > 1:
        sections.insert(0, _overview_section(grid, methods, overview, with_paper))
    head = [
        f"Grid {grid.name}: {grid.description}" if table is None else
        f"Table {table} rebuilt from grid {grid.name} ({grid.paper or 'no paper table'}): {grid.description}",
        "best = min validation loss over a run's evals (nats/token), PPL = exp(best); mean PPL = exp(mean best); "
        "std is the sample std (ddof=1)",
        f"Δ = method − {name(grid.baseline)} per seed (complete pairs only), then mean; sign holds = same strict sign in every seed",
        "* marks a mean over fewer seeds (or pairs) than the grid has; unfinished runs show their state",
    ]
    if grid.report_bpb:
        head.append("bpb = bits per UTF-8 byte of the validation text at the run's best-loss evaluation; Δ bpb likewise paired")
    if with_paper:
        head.append("[paper x] = the number the paper states in its text (its table cells were lost)")
    return Report(f"Grid {grid.name}" if table is None else f"Table {table}", head + caption, sections)


def _bpb_sections(label, part, methods, seeds, baseline, key) -> list[Section]:
    """Seeds x methods bits per byte (mean, std) and its paired deltas against the baseline."""
    bpb, state = frames.seed_frames(part.assign(best=part["best_bpb"]), methods=methods, seeds=seeds)
    stats = frames.column_stats(bpb)
    index = pd.Index([str(s) for s in bpb.index] + ["mean", "std"], name="seed")
    columns: dict[str, list[str]] = {}
    records = []
    for method in bpb.columns:
        cells = [state.at[seed, method] or fmt(bpb.at[seed, method]) for seed in bpb.index]
        records += [{"row": str(seed), "method": method, "bpb": bpb.at[seed, method]} for seed in bpb.index]
        mean, std, n, expected = (stats.loc[method, k] for k in ("mean", "std", "n", "expected"))
        flag = incomplete(n, expected, "seeds")
        cells += [DASH if n == 0 else fmt(mean) + flag, "n/a" if n < 2 else fmt(std) + ("*" if flag else "")]
        records += [{"row": "mean", "method": method, "bpb": mean, "n": int(n), "expected": int(expected)},
                    {"row": "std", "method": method, "bpb": std, "n": int(n), "expected": int(expected)}]
        columns[name(method)] = cells
    sections = [Section(f"{label}bits per byte at the best-loss eval", pd.DataFrame(columns, index=index),
                        pd.DataFrame(records))]
    deltas = frames.paired_deltas(bpb, baseline=baseline)
    if not deltas.columns.empty:
        sections.append(_delta_section(f"{label}paired Δ bpb vs {name(baseline)}", deltas,
                                       frames.delta_stats(deltas), key, with_paper=False))
    return sections


def _loss_section(title, best, state, stats, key, with_paper) -> Section:
    index = pd.Index([str(s) for s in best.index] + ["mean", "std"], name="seed")
    columns: dict[str, list[str]] = {}
    records = []
    best_of, state_of = best.to_dict(), state.to_dict()  # {method: {seed: value}}: fast scalar access
    for method in best.columns:
        cells = []
        for seed in best.index:
            value, run_state = best_of[method][seed], state_of[method][seed]
            text = run_state or f"{fmt(value)} / {fmt(math.exp(value), 2)}"
            stated = paper.lookup(paper.SEED_LOSS, key, method, seed) if with_paper else None
            cells.append(with_paper_value(text, stated))
            records.append({"row": str(seed), "method": method, "best_val_loss": value,
                            "ppl": math.exp(value) if not math.isnan(value) else math.nan,
                            "state": run_state or "complete", "paper": stated})
        mean, std, n, expected = (stats.loc[method, k] for k in ("mean", "std", "n", "expected"))
        flag = incomplete(n, expected, "seeds")
        mean_text = DASH if n == 0 else f"{fmt(mean)} / {fmt(math.exp(mean), 2)}{flag}"
        stated = paper.lookup(paper.MEAN_LOSS, key, method) if with_paper else None
        cells.append(with_paper_value(mean_text, stated))
        cells.append("n/a" if n < 2 else f"{fmt(std)}{'*' if flag else ''}")
        records.append({"row": "mean", "method": method, "best_val_loss": mean, "ppl": math.exp(mean) if n else math.nan,
                        "n": int(n), "expected": int(expected), "paper": stated})
        records.append({"row": "std", "method": method, "best_val_loss": std, "n": int(n), "expected": int(expected)})
        columns[name(method)] = cells
    return Section(title, pd.DataFrame(columns, index=index), pd.DataFrame(records))


def _delta_section(title, deltas, dstats, key, with_paper) -> Section:
    index = pd.Index([str(s) for s in deltas.index] + ["mean", "std", "sign holds"], name="seed")
    columns: dict[str, list[str]] = {}
    records = []
    for method in deltas.columns:
        cells = []
        for seed, value in deltas[method].items():
            stated = paper.lookup(paper.SEED_DELTA, key, method, seed) if with_paper else None
            cells.append(with_paper_value("incomplete" if math.isnan(value) else fmt(value, signed=True), stated, signed=True))
            records.append({"row": str(seed), "method": method, "delta": value, "paper": stated})
        s = dstats.loc[method]
        n, expected = int(s["n"]), int(s["expected"])
        flag = incomplete(n, expected, "pairs")
        stated = paper.lookup(paper.MEAN_DELTA, key, method) if with_paper else None
        cells.append(with_paper_value(DASH if n == 0 else fmt(s["mean"], signed=True) + flag, stated, signed=True))
        cells.append("n/a" if n < 2 else f"{fmt(s['std'])}{'*' if flag else ''}")
        cells.append(_sign_text(s))
        records.append({"row": "mean", "method": method, "delta": s["mean"], "n": n, "expected": expected,
                        "n_lower": int(s["n_lower"]), "n_higher": int(s["n_higher"]),
                        "sign_holds": s["sign_holds"], "paper": stated})
        records.append({"row": "std", "method": method, "delta": s["std"], "n": n, "expected": expected})
        columns[f"{name(method)} Δ"] = cells
    return Section(title, pd.DataFrame(columns, index=index), pd.DataFrame(records))


def _sign_text(s: pd.Series) -> str:
    lower, higher, n, expected = int(s["n_lower"]), int(s["n_higher"]), int(s["n"]), int(s["expected"])
    if s["sign_holds"] is True:
        return f"yes ({'lower' if lower else 'higher'} in {n}/{expected})"
    if s["sign_holds"] is False:
        return f"no ({lower} lower, {higher} higher)"
    return f"open ({n}/{expected} pairs)"


def _overview_section(grid: Grid, methods: list[str], overview, with_paper: bool) -> Section:
    """Rows = cells: seed-mean best loss / PPL per method and mean paired Δ (the paper's summary shape)."""
    index = pd.Index([c for c, _, _ in overview], name="cell")
    columns: dict[str, list[str]] = {}
    records = []
    for method in methods:
        cells = []
        for cell, stats, _ in overview:
            mean, n, expected = stats.loc[method, "mean"], stats.loc[method, "n"], stats.loc[method, "expected"]
            text = DASH if n == 0 else f"{fmt(mean)} / {fmt(math.exp(mean), 2)}{incomplete(n, expected, 'seeds')}"
            stated = paper.lookup(paper.MEAN_LOSS, (grid.name, cell), method) if with_paper else None
            cells.append(with_paper_value(text, stated))
            records.append({"cell": cell, "method": method, "mean_best_val_loss": mean, "n": int(n), "paper": stated})
        columns[name(method)] = cells
    for method in [m for m in methods if m != grid.baseline]:
        cells = []
        for cell, _, dstats in overview:
            s = dstats.loc[method] if method in dstats.index else None
            n = 0 if s is None else int(s["n"])
            text = DASH if n == 0 else fmt(s["mean"], signed=True) + incomplete(n, int(s["expected"]), "pairs")
            stated = paper.lookup(paper.MEAN_DELTA, (grid.name, cell), method) if with_paper else None
            cells.append(with_paper_value(text, stated, signed=True))
            records.append({"cell": cell, "method": method, "mean_delta": s["mean"] if n else math.nan, "n": n, "paper": stated})
        columns[f"{name(method)} Δ"] = cells
    return Section("seed means by cell", pd.DataFrame(columns, index=index), pd.DataFrame(records))
