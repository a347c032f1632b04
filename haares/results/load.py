"""The only reports file that touches SQL: tidy DataFrames of one grid's runs and evaluations.

`load_runs` gives one row per (grid label, job); `load_evals` one row per evaluation point. Both
carry the grid's labels (cell, method, seed) from `grid_runs`, so a job shared by two grids is
reported under each grid's own labels.
"""

from __future__ import annotations

import json

import pandas as pd
from sqlalchemy import Engine, func, select

from haares.jobs.schema import Eval, GridRun, Job

RUN_COLUMNS = (
    "grid", "cell", "method", "seed", "pair_index", "method_index", "job_id", "run_key", "status",
    "step", "total_steps", "attempts", "best_val_loss", "steps_per_s", "tokens_per_s", "config_json",
)
CONFIG_COLUMNS = (
    "budget_steps", "eval_every", "eval_tokens", "precision", "d_model", "d_ff", "n_layers", "blocks", "residual",
    "batch_order_hash",
)
EVAL_COLUMNS = (
    "grid", "cell", "method", "seed", "job_id", "run_key", "step", "tokens", "train_seconds", "val_loss",
    "val_bpb", "train_loss", "steps_per_s", "tokens_per_s", "peak_mem_bytes", "device",
)


def count_runs(engine: Engine, grid: str) -> int:
    """How many jobs the database labels with `grid`."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(GridRun).where(GridRun.grid == grid)).scalar_one())


def _newest(grid: str):
    """Subquery: the newest job id (highest) per (cell, method, seed) label of `grid`."""
    return (
        select(func.max(GridRun.job_id))
        .where(GridRun.grid == grid)
        .group_by(GridRun.cell, GridRun.method, GridRun.seed)
    )


def load_runs(engine: Engine, grid: str, *, newest: bool = False) -> pd.DataFrame:
    """One row per job of `grid`: its labels, queue state, progress and config fields.

    newest=True keeps only the newest job per (cell, method, seed) label, in SQL.
    Config fields parsed from `config_json`: budget_steps (train.steps), eval_every, eval_tokens
    (0 = whole split), precision, d_model, d_ff, n_layers, blocks, residual; and from a finished
    job's `result_json`, batch_order_hash (the proof of pairing).
    """
    query = (
        select(
            GridRun.grid, GridRun.cell, GridRun.method, GridRun.seed, GridRun.pair_index, GridRun.method_index,
            Job.id.label("job_id"), Job.run_key, Job.status, Job.step, Job.total_steps, Job.attempts,
            Job.best_val_loss, Job.steps_per_s, Job.tokens_per_s, Job.config_json, Job.result_json,
        )
        .join(Job, Job.id == GridRun.job_id)
        .where(GridRun.grid == grid)
        .order_by(GridRun.pair_index, GridRun.method_index, Job.id)
    )
    if newest:
        query = query.where(GridRun.job_id.in_(_newest(grid)))
    runs = pd.read_sql(query, engine)
    parsed = [
        {**_config_fields(raw), "batch_order_hash": _result_field(result, "batch_order_hash")}
        for raw, result in zip(runs["config_json"], runs["result_json"], strict=True)
    ]
    config = pd.DataFrame(parsed, columns=list(CONFIG_COLUMNS), index=runs.index)
    return pd.concat([runs.drop(columns=["config_json", "result_json"]), config], axis=1)


def load_evals(engine: Engine, grid: str, *, newest: bool = False) -> pd.DataFrame:
    """One row per evaluation point of every job of `grid` (newest=True: of the newest job per
    label only, filtered in SQL), ordered by job then step."""
    query = (
        select(
            GridRun.grid, GridRun.cell, GridRun.method, GridRun.seed, Eval.job_id, Job.run_key, Eval.step,
            Eval.tokens, Eval.train_seconds, Eval.val_loss, Eval.val_bpb, Eval.train_loss, Eval.steps_per_s,
            Eval.tokens_per_s, Eval.peak_mem_bytes, Eval.device,
        )
        .join(GridRun, GridRun.job_id == Eval.job_id)
        .join(Job, Job.id == Eval.job_id)
        .where(GridRun.grid == grid)
        .order_by(Eval.job_id, Eval.step)
    )
    if newest:
        query = query.where(Eval.job_id.in_(_newest(grid)))
    evals = pd.read_sql(query, engine)
    for column in ("val_loss", "val_bpb", "train_loss", "steps_per_s", "tokens_per_s", "train_seconds"):
        evals[column] = evals[column].astype("float64")
    return evals


def _json_text(raw: object) -> str | None:
    """A stored JSON column as text, or None. pandas 3 reads SQL NULL in a text column as NaN (a float),
    so an unfinished job's missing result arrives as NaN beside finished jobs' strings."""
    return raw if isinstance(raw, str) and raw else None


def _result_field(raw: object, key: str) -> object:
    """One field of a finished job's result JSON (None when absent or unreadable)."""
    text = _json_text(raw)
    try:
        return (json.loads(text) or {}).get(key) if text else None
    except (json.JSONDecodeError, AttributeError):
        return None


def _config_fields(raw: object) -> dict[str, object]:
    """The config fields reports show, from a job's stored config JSON (missing keys become None)."""
    text = _json_text(raw)
    try:
        cfg = json.loads(text) if text else {}
    except json.JSONDecodeError:
        cfg = {}
    if not isinstance(cfg, dict):
        cfg = {}
    model, data, train = cfg.get("model", {}), cfg.get("data", {}), cfg.get("train", {})
    return {
        "budget_steps": train.get("steps"),
        "eval_every": train.get("eval_every"),
        "eval_tokens": data.get("eval_tokens"),
        "precision": train.get("precision"),
        "d_model": model.get("d_model"),
        "d_ff": model.get("d_ff"),
        "n_layers": model.get("n_layers"),
        "blocks": model.get("blocks"),
        "residual": model.get("residual"),
    }
