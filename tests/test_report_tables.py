"""Checks Tables 3-9 against databases with known evaluations, numbers worked out by hand: per-seed
best (min over evals), PPL, mean, sample std, paired deltas, sign consistency, states shown for
unfinished runs, flagged means over incomplete sets, the by-cell overview and `--paper` values.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fixtures.report_db import build_grid_db

from haares.grids import GRIDS
from haares.results import frames, reports
from haares.results.render import render

MAIN48 = {
    ("", "standard", 42): {"evals": [(2000, 2.0), (4000, 1.90), (6000, 1.92)]},
    ("", "block_attnres", 42): {"evals": [(2000, 1.85), (4000, 1.80)]},
    ("", "haares", 42): {"evals": [(2000, 1.83), (4000, 1.78)]},
    ("", "standard", 123): {"evals": [(2000, 1.95)]},
    ("", "block_attnres", 123): {"evals": [(2000, 1.90), (4000, 1.82)]},
    ("", "haares", 123): {"evals": [(2000, 1.79), (4000, 1.81)]},
    ("", "standard", 2026): {"evals": [(2000, 1.93)]},
    ("", "block_attnres", 2026): {"evals": [(2000, 1.84)]},
    ("", "haares", 2026): {"status": "running", "step": 4000, "evals": [(2000, 1.90)]},
}


@pytest.fixture
def table4(sqlite_url):
    engine = build_grid_db(sqlite_url, "main48", MAIN48)
    return reports.build_report(engine, 4, GRIDS["main48"])


def data(report, title_part):
    return next(s for s in report.sections if title_part in s.title)


def value(section, row, method, column):
    d = section.data
    return d[(d["row"] == row) & (d["method"] == method)][column].iloc[0]


def test_per_seed_best_is_the_minimum_over_evals(table4):
    loss = data(table4, "best validation loss")
    assert value(loss, "42", "standard", "best_val_loss") == pytest.approx(1.90)
    assert value(loss, "123", "haares", "best_val_loss") == pytest.approx(1.79)
    assert value(loss, "42", "haares", "ppl") == pytest.approx(math.exp(1.78))
    assert loss.frame.loc["42", "Standard Residual"] == "1.9000 / 6.69"
    assert loss.frame.loc["42", "Block AttnRes"] == "1.8000 / 6.05"


def test_mean_and_sample_std(table4):
    loss = data(table4, "best validation loss")
    assert value(loss, "mean", "block_attnres", "best_val_loss") == pytest.approx(1.82)
    assert value(loss, "std", "block_attnres", "best_val_loss") == pytest.approx(0.02)
    assert value(loss, "std", "standard", "best_val_loss") == pytest.approx(np.std([1.90, 1.95, 1.93], ddof=1))
    assert loss.frame.loc["mean", "Block AttnRes"] == f"1.8200 / {math.exp(1.82):.2f}"
    assert loss.frame.loc["std", "Block AttnRes"] == "0.0200"


def test_unfinished_run_shows_its_state_and_the_mean_says_incomplete(table4):
    loss = data(table4, "best validation loss")
    assert loss.frame.loc["2026", "HAARES"] == "running @ step 4000"
    assert value(loss, "mean", "haares", "best_val_loss") == pytest.approx(1.785)
    assert loss.frame.loc["mean", "HAARES"] == f"1.7850 / {math.exp(1.785):.2f}* (2/3 seeds)"
    assert loss.frame.loc["std", "HAARES"] == f"{np.std([1.78, 1.79], ddof=1):.4f}*"


def test_paired_deltas_and_sign_consistency(table4):
    delta = data(table4, "paired Δ")
    assert delta.frame.loc["42", "Standard Residual Δ"] == "+0.1000"
    assert delta.frame.loc["42", "HAARES Δ"] == "-0.0200"
    assert delta.frame.loc["2026", "HAARES Δ"] == "incomplete"
    assert value(delta, "mean", "standard", "delta") == pytest.approx((0.10 + 0.13 + 0.09) / 3)
    assert delta.frame.loc["sign holds", "Standard Residual Δ"] == "yes (higher in 3/3)"
    # The incomplete pair is left out of the mean, and the mean says so.
    assert value(delta, "mean", "haares", "delta") == pytest.approx(-0.025)
    assert delta.frame.loc["mean", "HAARES Δ"] == "-0.0250* (2/3 pairs)"
    assert delta.frame.loc["sign holds", "HAARES Δ"] == "open (2/3 pairs)"
    assert value(delta, "mean", "haares", "sign_holds") is None


def test_caption_names_eval_cap_and_precision(table4):
    text = render(table4, "md")
    assert "first 1,048,576 validation tokens, every 2,000 steps; precision fp32; budget 30,000 steps" in text
    assert "| 42 | 1.9000 / 6.69 | 1.8000 / 6.05 | 1.7800 / 5.93 |" in text


def test_other_states_and_missing_runs(sqlite_url):
    engine = build_grid_db(sqlite_url, "smoke", {
        ("", "standard", 42): {"status": "failed", "evals": [(50, 2.5)]},
        ("", "block_attnres", 42): {"status": "queued", "step": 0, "evals": []},
        ("", "haares", 42): {"status": "queued", "step": 100, "evals": [(50, 2.4), (100, 2.3)]},
        ("", "standard", 123): {"status": "succeeded", "evals": []},
    })
    frame = data(reports.build_report(engine, 4, GRIDS["smoke"]), "best validation loss").frame
    assert frame.loc["42", "Standard Residual"] == "failed"
    assert frame.loc["42", "Block AttnRes"] == "queued"
    assert frame.loc["42", "HAARES"] == "queued @ step 100"
    assert frame.loc["123", "Standard Residual"] == "no evals"
    assert frame.loc["123", "HAARES"] == "not enqueued"
    assert frame.loc["mean", "HAARES"] == "—"


def test_delta_stats_sign_rules():
    deltas = pd.DataFrame({
        "all_lower": [-0.1, -0.2, -0.3], "mixed": [-0.1, 0.2, -0.3], "mixed_incomplete": [-0.1, np.nan, 0.2],
        "open": [-0.1, -0.2, np.nan], "zero": [-0.1, 0.0, -0.2],
    }, index=[42, 123, 2026])
    s = frames.delta_stats(deltas)
    assert s.loc["all_lower", "sign_holds"] is True and s.loc["all_lower", "n_lower"] == 3
    assert s.loc["mixed", "sign_holds"] is False
    assert s.loc["mixed_incomplete", "sign_holds"] is False
    assert s.loc["open", "sign_holds"] is None and s.loc["open", "n"] == 2
    assert s.loc["zero", "sign_holds"] is False
    assert s.loc["all_lower", "mean"] == pytest.approx(-0.2) and s.loc["all_lower", "std"] == pytest.approx(0.1)


def test_multi_cell_grid_has_an_overview(sqlite_url):
    engine = build_grid_db(sqlite_url, "depth", {
        ("12L", "block_attnres", 42): {"evals": [(2000, 2.0)]},
        ("12L", "haares", 42): {"evals": [(2000, 1.9)]},
        ("48L", "block_attnres", 42): {"evals": [(2000, 1.8)]},
    })
    report = reports.build_report(engine, 3, GRIDS["depth"])
    overview = report.sections[0]
    assert overview.title == "seed means by cell"
    assert list(overview.frame.index) == ["12L", "24L", "48L"]
    assert overview.frame.loc["12L", "HAARES"] == f"1.9000 / {math.exp(1.9):.2f}* (1/3 seeds)"
    assert overview.frame.loc["12L", "HAARES Δ"] == "-0.1000* (1/3 pairs)"
    assert overview.frame.loc["48L", "HAARES Δ"] == "—"
    assert overview.frame.loc["24L", "Block AttnRes"] == "—"
    assert [s.title for s in report.sections[1:3]] == ["cell 12L: best validation loss / PPL", "cell 12L: paired Δ vs Block AttnRes"]


def test_paper_values_sit_beside_measured_ones(sqlite_url):
    engine = build_grid_db(sqlite_url, "main48", MAIN48)
    report = reports.build_report(engine, 4, GRIDS["main48"], with_paper=True)
    loss, delta = data(report, "best validation loss"), data(report, "paired Δ")
    assert loss.frame.loc["42", "Block AttnRes"] == "1.8000 / 6.05 [paper 1.7995]"
    assert loss.frame.loc["mean", "HAARES"].endswith("[paper 1.7744]")
    assert loss.frame.loc["mean", "Standard Residual"] == f"{np.mean([1.90, 1.95, 1.93]):.4f} / {math.exp(np.mean([1.90, 1.95, 1.93])):.2f}"
    assert delta.frame.loc["123", "HAARES Δ"] == "-0.0300 [paper -0.0322]"


def test_caption_flags_resumed_runs_and_left_out_older_jobs(sqlite_url):
    engine = build_grid_db(sqlite_url, "smoke", {("", "haares", 42): {"evals": [(50, 2.0)], "attempts": 2}})
    build_grid_db(sqlite_url, "smoke", {("", "haares", 42): {"evals": [(50, 2.0)], "attempts": 2}},
                  overrides={"train.steps": 100})
    caption = reports.build_report(engine, 4, GRIDS["smoke"]).caption
    assert "resumed after an interruption (more than one attempt): haares seed 42" in caption
    assert any(line.startswith("1 older run(s) with the same grid labels are left out") for line in caption)
    assert any("budget 100 steps" in line for line in caption)  # the newest job is the one shown
