"""Training curves as a PNG: validation loss vs step, one line per method, one panel per seed
(and one row of panels per cell), like the paper's Figure 2. Agg canvas, no pyplot global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from haares.errors import HaaresError
from haares.results.cells import name


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
    path = Path(path)
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise HaaresError(f"cannot write plot to {path}: {exc.strerror or exc}") from None
    return path
