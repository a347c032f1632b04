"""`haares grids`: every grid with its paper table, distinct runs and an estimated GPU-hour budget.

The estimate is training FLOPs (haares.cost.model_flops_per_token x tokens) over one assumed sustained
rate: the rate the paper's own figure implies (Block AttnRes, medium 48L, 2.08 steps/s; product.md).
"""

from __future__ import annotations

from typing import Any

PAPER_STEPS_PER_S = 2.08
"""Block AttnRes at medium 48L in the paper's Table 12 (fp32); calibrates the sustained FLOP rate."""


def _flops_per_step(cfg: Any) -> float:
    from haares.cost import model_flops_per_token

    tokens = cfg.train.batch_size * cfg.data.seq_len
    return model_flops_per_token(cfg.model, cfg.data.seq_len) * tokens


def assumed_flops_per_s() -> float:
    """Sustained training FLOP/s implied by the paper's 2.08 steps/s for Block AttnRes medium 48L."""
    from haares.grids import MEDIUM_48

    return _flops_per_step(MEDIUM_48.override({"model.residual": "block_attnres"})) * PAPER_STEPS_PER_S


def grid_summaries() -> list[dict[str, Any]]:
    """Per grid: name, paper table, distinct runs (unique run keys), total steps and estimated GPU-hours."""
    from haares.grids import GRIDS, expand

    rate = assumed_flops_per_s()
    out = []
    for grid in GRIDS.values():
        runs = {r.run_key: r for r in expand(grid)}
        flops = sum(_flops_per_step(r.config) * r.config.train.steps for r in runs.values())
        out.append({
            "grid": grid.name, "paper": grid.paper, "runs": len(runs),
            "steps": sum(r.config.train.steps for r in runs.values()),
            "gpu_hours": flops / rate / 3600, "description": grid.description,
        })
    return out


def grids() -> None:
    """List every grid: paper table, distinct runs and an estimated GPU-hour budget."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="grids")
    for col in ("grid", "paper", "runs", "GPU-h (est.)", "what"):
        # A grid's name is what users type next: never wrapped, whatever the terminal's width.
        table.add_column(col, justify="right" if col in ("runs", "GPU-h (est.)") else "left",
                         no_wrap=col == "grid")
    for row in grid_summaries():
        table.add_row(row["grid"], row["paper"], str(row["runs"]), f"{row['gpu_hours']:,.1f}", row["description"])
    console = Console()
    console.print(table)
    console.print(
        f"GPU-hours assume {assumed_flops_per_s() / 1e12:.1f} TFLOP/s sustained: the rate implied by the "
        f"paper's {PAPER_STEPS_PER_S} steps/s for Block AttnRes at medium 48L (fp32), applied to "
        "haares.cost.model_flops_per_token x tokens of every distinct run. Runs shared by grids count in each."
    )
