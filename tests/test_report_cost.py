"""Checks Table 10 (`haares report --table 10` prints the paper's source counts exactly, with the Eq. 14
numerators 2.46 / 3.44 / 4.41 and ratios at d=512) and Table 11 (throughput, peak memory and HAARES's
overhead over Block AttnRes from a database with known measurements, plus the analytic FLOP increase).
"""

from __future__ import annotations

import pytest
from fixtures.report_db import build_grid_db
from typer.testing import CliRunner

from haares import cost
from haares.cli.app import app
from haares.grids import GRIDS
from haares.results import reports

PAPER_TABLE10 = [
    ("Block AttnRes", "4", "3.46", "5"), ("HAARES", "4", "5.92", "9"),
    ("Block AttnRes", "6", "4.44", "7"), ("HAARES", "6", "7.88", "13"),
    ("Block AttnRes", "8", "5.42", "9"), ("HAARES", "8", "9.83", "17"),
]


def rich_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("│ ").split("│")] for line in text.splitlines() if line.startswith("│")]


def test_table10_prints_the_papers_numbers_exactly():
    result = CliRunner().invoke(app, ["report", "--table", "10"])
    assert result.exit_code == 0, result.output
    rows = rich_rows(result.output)
    assert [tuple(r[:4]) for r in rows] == PAPER_TABLE10
    assert [r[4] for r in rows] == ["—", "2.46", "—", "3.44", "—", "4.41"]
    assert [r[5] for r in rows] == ["—", "0.24%", "—", "0.34%", "—", "0.43%"]


def test_table10_markdown_rows():
    result = CliRunner().invoke(app, ["report", "--table", "10", "--format", "md", "--paper"])
    assert result.exit_code == 0, result.output
    assert "| Block AttnRes | 4 | 3.46 | 5 | — | — | 3.46 / 5 |" in result.output
    assert "| HAARES | 8 | 9.83 | 17 | 4.41 | 0.43% | 9.83 / 17 |" in result.output


@pytest.fixture
def table11(sqlite_url):
    def run(steps_per_s, mem_gb, **kw):
        return {"evals": [(2000, 3.0)], "steps_per_s": steps_per_s, "tokens_per_s": steps_per_s * 16 * 512,
                "peak_mem_bytes": int(mem_gb * 1e9), "device": "NVIDIA H100", **kw}

    engine = build_grid_db(sqlite_url, "cost", {
        ("small", "block_attnres", 42): run(4.0, 3.0),
        ("small", "haares", 42): run(3.2, 4.0),
        ("medium", "block_attnres", 42): run(2.08, 30.0),
        ("medium", "haares", 42): run(1.71, 36.0),
        ("large", "block_attnres", 42): run(1.0, 50.0),
        ("large", "haares", 42): run(1.0, 50.0, status="running", step=1200),
    })
    return reports.build_report(engine, 11, GRIDS["cost"], with_paper=True)


def test_table11_throughput_memory_and_overheads(table11):
    section = table11.sections[0]
    frame, data = section.frame, section.data.set_index(["cell", "method"])
    assert list(frame.index) == ["small (d=128)", "medium (d=512)", "large (d=768)"]
    assert frame.loc["small (d=128)", "Peak mem GB"] == "3.00 / 4.00"
    assert frame.loc["small (d=128)", "Mem +%"] == "33.3"
    assert frame.loc["small (d=128)", "Steps/s"] == "4.00 / 3.20"
    assert frame.loc["small (d=128)", "Time +%"] == "25.0"
    assert frame.loc["small (d=128)", "Tokens/s (K)"] == "32.8 / 26.2"
    assert frame.loc["medium (d=512)", "Time +%"] == f"{100 * (2.08 / 1.71 - 1):.1f}"
    assert frame.loc["medium (d=512)", "Device"] == "NVIDIA H100"
    flops = 100 * cost.routing_flop_ratio(128, 48, 4, d_ff=1024)
    assert frame.loc["small (d=128)", "FLOPs +%"] == f"{flops:.2f}"
    assert data.loc[("small", "haares"), "mem_overhead_pct"] == pytest.approx(100 / 3)
    assert data.loc[("small", "haares"), "flop_increase_pct"] == pytest.approx(flops)
    # An unfinished run shows its state, and no overhead is computed from it.
    assert frame.loc["large (d=768)", "Steps/s"] == "1.00 / running @ step 1200"
    assert frame.loc["large (d=768)", "Time +%"] == "—"
    assert frame.loc["small (d=128)", "paper mem / time +%"] == "33 / —"


def test_table11_of_a_grid_with_more_schemes_lists_each_ones_cost(sqlite_url):
    """The shakespeare grid also has Standard: a second section gives every method's own cost per cell,
    training seconds per run = the last eval's train_seconds (2000 steps / steps per second here)."""
    def run(steps_per_s, mem_gb, **kw):
        return {"evals": [(1000, 3.1), (2000, 3.0)], "steps_per_s": steps_per_s, "tokens_per_s": steps_per_s * 8192,
                "peak_mem_bytes": int(mem_gb * 1e9), "device": "NVIDIA H200", **kw}

    results = {("12L", "standard", 42): run(100.0, 1.0), ("12L", "block_attnres", 42): run(80.0, 1.5),
               ("12L", "haares", 42): run(50.0, 2.0), ("24L", "haares", 42): run(20.0, 3.0, status="queued", step=0)}
    engine = build_grid_db(sqlite_url, "shakespeare", results)
    built = reports.build_report(engine, 11, GRIDS["shakespeare"], with_paper=False)
    every = next(s for s in built.sections if s.title == "every method").frame
    assert list(every.index) == ["12L Standard Residual", "12L Block AttnRes", "12L HAARES", "24L HAARES"]
    assert every.loc["12L Standard Residual"].tolist() == ["1", "20.0", "100.00", "819.2", "1.00"]
    assert every.loc["12L HAARES", "Train s / run"] == "40.0"
    assert every.loc["24L HAARES", "Runs done"] == "0" and every.loc["24L HAARES", "Steps/s"] == "—"
    engine.dispose()


def test_table11_of_the_cost_grid_has_no_every_method_section(table11):
    assert [s.title for s in table11.sections] == [""]
