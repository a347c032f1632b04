"""Training curves as a PNG: validation loss vs step, one line per method, one panel per seed
(and one row of panels per cell), like the paper's Figure 2. Agg canvas, no pyplot global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from haares.errors import HaaresError
from haares.results.render import name


def plot_curves(
    evals: pd.DataFrame,
    path: Path,
    *,
    methods: Sequence[str],
    seeds: Sequence[int],
    cells: Sequence[str],
    title: str,
) -> Path:
    """Write the curves of `evals` (cell, method, seed, step, val_loss) to `path`; returns it.

    Rows of panels are cells, columns are seeds; panels without evaluations stay empty.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if evals.empty:
        raise HaaresError("no evaluations recorded yet for this grid; nothing to plot")
    cells = [c for c in cells if (evals["cell"] == c).any()]
    seeds = [s for s in seeds if (evals["seed"] == s).any()]
    fig = Figure(figsize=(4.2 * len(seeds), 3.2 * len(cells)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(cells), len(seeds), squeeze=False, sharey="row")
    for i, cell in enumerate(cells):
        for j, seed in enumerate(seeds):
            ax = axes[i][j]
            for method in methods:
                curve = evals[(evals["cell"] == cell) & (evals["seed"] == seed) & (evals["method"] == method)]
                if not curve.empty:
                    curve = curve.sort_values("step")
                    ax.plot(curve["step"], curve["val_loss"], marker=".", label=name(method))
            ax.set_title(f"{cell + ', ' if cell else ''}seed {seed}")
            ax.set_xlabel("step")
            if j == 0:
                ax.set_ylabel("validation loss (nats/token)")
            ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(title)
    return _save(fig, Path(path))


def plot_paired_differences(
    evals: pd.DataFrame,
    path: Path,
    *,
    methods: Sequence[str],
    baseline: str,
    seeds: Sequence[int],
    cells: Sequence[str],
    title: str,
) -> Path:
    """Each method minus `baseline`, per seed, over steps: one panel per cell; returns `path`.

    At small scale the absolute curves lie on top of each other; the paired difference (same seed,
    same batches, same initial weights) is what shows who is ahead. Below zero: the method's validation
    loss is lower than the baseline's at that step. Only steps both runs evaluated are drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if evals.empty:
        raise HaaresError("no evaluations recorded yet for this grid; nothing to plot")
    cells = [c for c in cells if (evals["cell"] == c).any()]
    others = [m for m in methods if m != baseline]
    fig = Figure(figsize=(5.0 * len(cells), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(cells), squeeze=False, sharey=True)[0]
    colours = {m: f"C{i}" for i, m in enumerate(others)}
    styles = ["-", "--", ":", "-."]
    for ax, cell in zip(axes, cells, strict=True):
        in_cell = evals[evals["cell"] == cell]
        for k, seed in enumerate(seeds):
            base = in_cell[(in_cell["seed"] == seed) & (in_cell["method"] == baseline)].set_index("step")["val_loss"]
            for method in others:
                run = in_cell[(in_cell["seed"] == seed) & (in_cell["method"] == method)].set_index("step")["val_loss"]
                diff = (run - base).dropna().sort_index()
                if not diff.empty:
                    ax.plot(diff.index, diff.values, styles[k % len(styles)], color=colours[method], marker=".",
                            label=f"{name(method)}, seed {seed}")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(cell or title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"val loss minus {name(baseline)} (nats)")
    axes[-1].legend(fontsize="small")
    fig.suptitle(f"{title}: paired differences against {name(baseline)}")
    return _save(fig, Path(path))


def _save(fig, path: Path) -> Path:
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise HaaresError(f"cannot write plot to {path}: {exc.strerror or exc}") from None
    return path
