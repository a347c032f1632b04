"""The paired-differences plot draws each method minus the baseline only where both runs evaluated,
and refuses an empty frame with a one-line error (no torch, pandas frames built by hand)."""

from __future__ import annotations

import pandas as pd
import pytest

from haares.errors import HaaresError
from haares.results import plot


def _evals() -> pd.DataFrame:
    rows = []
    for seed in (42, 123):
        for step in (250, 500):
            rows.append({"cell": "48L", "method": "block_attnres", "seed": seed, "step": step, "val_loss": 2.0})
            rows.append({"cell": "48L", "method": "haares", "seed": seed, "step": step, "val_loss": 1.9})
        rows.append({"cell": "48L", "method": "standard", "seed": seed, "step": 250, "val_loss": 2.1})
    return pd.DataFrame(rows)


def test_paired_differences_plot_is_written(tmp_path, monkeypatch):
    drawn = []
    original = plot._save

    def spy(fig, path):
        for ax in fig.axes:
            for line in ax.get_lines():
                if line.get_label().startswith(("HAARES", "Standard", "haares", "standard")):
                    drawn.append((line.get_label(), list(line.get_xdata()), list(line.get_ydata())))
        return original(fig, path)

    monkeypatch.setattr(plot, "_save", spy)
    out = plot.plot_paired_differences(_evals(), tmp_path / "diff.png", methods=["standard", "block_attnres", "haares"],
                                       baseline="block_attnres", seeds=[42, 123], cells=["48L"], title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(drawn) == 4, drawn  # 2 methods x 2 seeds
    haares = [d for d in drawn if "42" in d[0] and d[0].lower().startswith("haares")]
    assert haares and haares[0][1] == [250, 500] and haares[0][2] == pytest.approx([-0.1, -0.1])
    standard = [d for d in drawn if d[0].lower().startswith("standard")]
    assert all(d[1] == [250] for d in standard), "only steps both runs evaluated"


def test_paired_differences_of_nothing_is_a_user_error(tmp_path):
    empty = pd.DataFrame(columns=["cell", "method", "seed", "step", "val_loss"])
    with pytest.raises(HaaresError, match="no evaluations"):
        plot.plot_paired_differences(empty, tmp_path / "x.png", methods=["a"], baseline="a", seeds=[1],
                                     cells=[""], title="t")


def test_a_one_cell_grid_of_many_methods_gets_one_panel_per_method(tmp_path, monkeypatch):
    ablations = ["haares_dup_b", "haares_random_sign", "haares_bias_0", "haares_no_rms", "block_attnres"]
    rows = [{"cell": "", "method": m, "seed": seed, "step": step, "val_loss": 2.0 + 0.01 * i}
            for seed in (42, 123) for step in (250, 500) for i, m in enumerate(["haares", *ablations])]
    panels = []
    original = plot._save

    def spy(fig, path):
        for ax in fig.axes:
            if ax.get_visible():
                panels.append((ax.get_title(), sorted(line.get_label() for line in ax.get_lines()
                                                      if line.get_label().startswith("seed"))))
        return original(fig, path)

    monkeypatch.setattr(plot, "_save", spy)
    plot.plot_paired_differences(pd.DataFrame(rows), tmp_path / "d.png", methods=["haares", *ablations],
                                 baseline="haares", seeds=[42, 123], cells=[""], title="t")
    assert [title for title, _ in panels] == ["Dup. b", "Random-sign detail", "Fixed bias=0",
                                              "HAARES w/o RMS matching", "Block AttnRes"]
    assert all(lines == ["seed 123", "seed 42"] for _, lines in panels), panels


def test_a_grid_of_two_methods_names_the_method_in_each_line(tmp_path, monkeypatch):
    rows = [{"cell": cell, "method": m, "seed": 42, "step": 250, "val_loss": v}
            for cell in ("12L", "24L") for m, v in (("block_attnres", 2.0), ("haares", 1.9))]
    labels = []
    original = plot._save

    def spy(fig, path):
        labels.extend(line.get_label() for ax in fig.axes for line in ax.get_lines() if line.get_label()[0] != "_")
        return original(fig, path)

    monkeypatch.setattr(plot, "_save", spy)
    plot.plot_paired_differences(pd.DataFrame(rows), tmp_path / "d.png", methods=["block_attnres", "haares"],
                                 baseline="block_attnres", seeds=[42], cells=["12L", "24L"], title="t")
    assert labels == ["HAARES, seed 42", "HAARES, seed 42"]
