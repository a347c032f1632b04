"""How report cells look: method names, numbers, incomplete-set flags, paper values, caption lines."""

from __future__ import annotations

import math

import pandas as pd

METHOD_NAMES = {
    "standard": "Standard Residual", "rezero": "ReZero", "layerscale": "LayerScale",
    "block_attnres": "Block AttnRes", "haares": "HAARES", "haares_dup_b": "Dup. b",
    "haares_random_sign": "Random-sign detail", "haares_bias_0": "Fixed bias=0",
    "haares_bias_-2": "Fixed bias=-2", "haares_bias_-4": "Fixed bias=-4",
    "haares_no_rms": "HAARES w/o RMS matching",
}
DASH = "—"


def name(method: str) -> str:
    """The paper's name for a method label."""
    return METHOD_NAMES.get(method, method)


def fmt(value: float, digits: int = 4, *, signed: bool = False) -> str:
    """A number with fixed decimals, or a dash for NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def with_paper_value(text: str, stated: float | None, digits: int = 4, *, signed: bool = False) -> str:
    """`text` followed by `[paper x]` when the paper states a number for this cell."""
    return text if stated is None else f"{text} [paper {fmt(stated, digits, signed=signed)}]"


def incomplete(n: int, expected: int, unit: str) -> str:
    """'' for a complete set, else '* (n/expected unit)'."""
    return "" if n >= expected else f"* ({n}/{expected} {unit})"


def pairing_caption(runs: pd.DataFrame) -> str | None:
    """Whether every finished pair (same cell and seed) saw the same batches, by batch-order hash.

    None when no finished pair recorded a hash (e.g. runs from before hashes were recorded).
    """
    if "batch_order_hash" not in runs:
        return None
    done = runs[(runs["status"] == "succeeded") & runs["batch_order_hash"].notna()]
    sizes = done.groupby(["cell", "seed"]).size()
    pairs = sizes[sizes > 1].index
    if not len(pairs):
        return None
    distinct = done.groupby(["cell", "seed"])["batch_order_hash"].nunique()
    broken = [f"{cell + ' ' if cell else ''}seed {seed}" for cell, seed in pairs if distinct[(cell, seed)] > 1]
    if broken:
        return f"PAIRING BROKEN: runs of {', '.join(broken)} saw different batch orders; their deltas are not paired"
    return f"pairing checked: the {len(pairs)} finished pair(s) saw identical batch orders (batch-order hash)"


def settings_caption(runs: pd.DataFrame, superseded: int) -> list[str]:
    """Caption lines with the eval token cap, eval interval, precision and step budget of the runs."""

    def values(column: str, show) -> str:
        found = sorted({v for v in runs[column] if v is not None and not (isinstance(v, float) and math.isnan(v))}, key=str)
        return " / ".join(show(v) for v in found) if found else "unknown"

    tokens = values("eval_tokens", lambda v: "whole validation split" if int(v) == 0 else f"first {int(v):,} validation tokens")
    lines = [
        f"eval: {tokens}, every {values('eval_every', lambda v: f'{int(v):,}')} steps; "
        f"precision {values('precision', str)}; budget {values('budget_steps', lambda v: f'{int(v):,}')} steps",
    ]
    pairing = pairing_caption(runs)
    if pairing:
        lines.append(pairing)
    resumed = runs.loc[runs["attempts"].fillna(0) > 1, ["method", "seed"]]
    if len(resumed):
        which = ", ".join(f"{m} seed {s}" for m, s in resumed.itertuples(index=False))
        lines.append(f"resumed after an interruption (more than one attempt): {which}")
    if superseded:
        lines.append(f"{superseded} older run(s) with the same grid labels are left out (the newest job per label is shown)")
    return lines
