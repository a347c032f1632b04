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


# More methods than this in a one-cell grid get one panel each: a single panel of 7 methods x 3 seeds
# (the ablations) is 21 overlapping lines under a legend that covers them.
_METHODS_PER_PANEL = 3


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
    """Each method minus `baseline`, per seed, over steps; returns `path`.

    One panel per cell, every method in it; a one-cell grid with more than three other methods gets one
    panel per method instead (seeds as line styles, a shared y axis). At small scale the absolute curves
    lie on top of each other; the paired difference (same seed, same batches, same initial weights) is
    what shows who is ahead. Below zero: the method's validation loss is lower than the baseline's at
    that step. Only steps both runs evaluated are drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if evals.empty:
        raise HaaresError("no evaluations recorded yet for this grid; nothing to plot")
    cells = [c for c in cells if (evals["cell"] == c).any()]
    others = [m for m in methods if m != baseline]
    per_method = len(cells) == 1 and len(others) > _METHODS_PER_PANEL
    if per_method:
        panels = [(cells[0], [m], name(m)) for m in others]
    else:
        panels = [(cell, others, cell or title) for cell in cells]
    ncols = min(len(panels), 4)
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(5.0 * ncols, 3.6 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    colours = {m: f"C{i}" for i, m in enumerate(others)}
    styles = ["-", "--", ":", "-."]
    for ax, (cell, shown, panel_title) in zip(axes, panels, strict=False):
        in_cell = evals[evals["cell"] == cell]
        for k, seed in enumerate(seeds):
            base = in_cell[(in_cell["seed"] == seed) & (in_cell["method"] == baseline)].set_index("step")["val_loss"]
            for method in shown:
                run = in_cell[(in_cell["seed"] == seed) & (in_cell["method"] == method)].set_index("step")["val_loss"]
                diff = (run - base).dropna().sort_index()
                if not diff.empty:
                    label = f"seed {seed}" if per_method else f"{name(method)}, seed {seed}"
                    ax.plot(diff.index, diff.values, styles[k % len(styles)], color=colours[method], marker=".",
                            label=label)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(panel_title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for row in range(nrows):
        axes[row * ncols].set_ylabel(f"val loss minus {name(baseline)} (nats)")
    # Per-method panels share one legend of seeds; otherwise the last panel's names every line.
    axes[0 if per_method else len(panels) - 1].legend(fontsize="small")
    fig.suptitle(f"{title}: paired differences against {name(baseline)}")
    return _save(fig, Path(path))


def _save(fig, path: Path) -> Path:
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise HaaresError(f"cannot write plot to {path}: {exc.strerror or exc}") from None
    return path
