"""Checks `haares report` end to end: user mistakes (unknown table, grid or format; a grid with no runs)
give one line and a non-zero exit with the database unchanged, a report loads no torch, every format
(md, csv, latex, json) carries the same numbers, and --plot writes a PNG.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from fixtures.report_db import build_grid_db
from sqlalchemy import func, select
from typer.testing import CliRunner

from haares.cli.app import app
from haares.jobs.db import make_engine
from haares.jobs.schema import Job

SMOKE = {
    ("", "block_attnres", 42): {"evals": [(50, 2.4), (100, 2.2)]},
    ("", "haares", 42): {"evals": [(50, 2.3), (100, 2.1)]},
    ("", "standard", 42): {"status": "running", "step": 60, "evals": [(50, 2.6)]},
}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--table", "13"], "error: unknown table 13; the paper's tables are 3 to 12"),
        (["--table", "4", "--grid", "nope"], "error: unknown grid 'nope'"),
        (["--table", "4", "--format", "xml"], "error: unknown format 'xml'"),
        (["--table", "4", "--grid", "smoke"], "error: no runs of grid smoke in DB; enqueue with `haares enqueue --grid smoke`"),
        (["--table", "10", "--grid", "smoke"], "error: table 10 is analytic"),
    ],
)
def test_mistakes_give_one_line_and_a_nonzero_exit(cli, sqlite_url, args, message):
    engine = build_grid_db(sqlite_url, "main48", {("", "haares", 42): {"evals": [(2000, 1.8)]}})
    code, out, err = cli("report", *args, "--db", sqlite_url)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), err
    assert "Traceback" not in err and out == ""
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)).scalar_one() == 1


def test_report_imports_no_torch(sqlite_url):
    build_grid_db(sqlite_url, "smoke", SMOKE)
    code = textwrap.dedent(f"""
        import sys
        import haares.results
        from haares.results import frames, load, paper, plot, render, reports, reports_cost
        from haares.cli.app import main
        sys.argv = ["haares", "report", "--table", "4", "--grid", "smoke", "--db", {sqlite_url!r}]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        assert "torch" not in sys.modules, "torch was imported"
        print("NO-TORCH-OK")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "NO-TORCH-OK" in result.stdout and "Table 4" in result.stdout


def test_formats_carry_the_same_numbers(sqlite_url):
    build_grid_db(sqlite_url, "smoke", SMOKE)
    runner = CliRunner()

    def out(fmt: str) -> str:
        result = runner.invoke(app, ["report", "--table", "4", "--grid", "smoke", "--format", fmt, "--db", sqlite_url])
        assert result.exit_code == 0, result.output
        return result.output

    md = out("md")
    assert "| 42 | running @ step 60 | 2.2000 / 9.03 | 2.1000 / 8.17 |" in md
    doc = json.loads(out("json"))
    loss = doc["sections"][0]
    assert loss["rows"][0] == {"label": "42", "Standard Residual": "running @ step 60",
                               "Block AttnRes": "2.2000 / 9.03", "HAARES": "2.1000 / 8.17"}
    haares_42 = next(r for r in loss["data"] if r["row"] == "42" and r["method"] == "haares")
    assert haares_42["best_val_loss"] == pytest.approx(2.1)
    assert next(r for r in loss["data"] if r["row"] == "42" and r["method"] == "standard")["best_val_loss"] is None
    delta = doc["sections"][1]["data"]
    assert next(r for r in delta if r["row"] == "42" and r["method"] == "haares")["delta"] == pytest.approx(-0.1)
    csv = pd.read_csv(io.StringIO(out("csv")))
    row = csv[(csv["row"] == "42") & (csv["method"] == "haares") & csv["best_val_loss"].notna()]
    assert row["best_val_loss"].iloc[0] == pytest.approx(2.1)
    latex = out("latex")
    assert "\\toprule" in latex and "\\bottomrule" in latex
    assert "42 & running @ step 60 & 2.2000 / 9.03 & 2.1000 / 8.17 \\\\" in latex


def test_plot_writes_a_png(sqlite_url, tmp_path):
    build_grid_db(sqlite_url, "smoke", SMOKE)
    target = tmp_path / "curves.png"
    result = CliRunner().invoke(
        app, ["report", "--table", "4", "--grid", "smoke", "--plot", str(target), "--db", sqlite_url]
    )
    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_diff_writes_the_paired_differences_beside_the_curves(sqlite_url, tmp_path, monkeypatch):
    """--plot-diff draws each method minus the grid's baseline (Block AttnRes for smoke), per seed."""
    from haares.results import plot

    drawn = []
    original = plot.plot_paired_differences
    monkeypatch.setattr(plot, "plot_paired_differences",
                        lambda evals, path, **kw: drawn.append(kw) or original(evals, path, **kw))
    build_grid_db(sqlite_url, "smoke", SMOKE)
    curves, diffs = tmp_path / "curves.png", tmp_path / "diff.png"
    result = CliRunner().invoke(app, ["report", "--table", "4", "--grid", "smoke", "--plot", str(curves),
                                      "--plot-diff", str(diffs), "--db", sqlite_url])
    assert result.exit_code == 0, result.output
    assert curves.read_bytes()[:8] == diffs.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [kw["baseline"] for kw in drawn] == ["block_attnres"]
    assert "block_attnres" in drawn[0]["methods"] and len(drawn[0]["methods"]) == 3


def test_empty_database_is_not_left_with_runs(cli, sqlite_url):
    make_engine(sqlite_url).dispose()
    code, _, err = cli("report", "--table", "12", "--db", sqlite_url)
    assert code != 0 and "no runs of grid main48" in err
    with make_engine(sqlite_url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)).scalar_one() == 0


def test_a_missing_database_is_not_created(cli, tmp_path):
    path = tmp_path / "nothing-here" / "x.db"
    code, out, err = cli("report", "--table", "12", "--db", f"sqlite:///{path}")
    assert code == 2 and err.startswith("error: no database at ") and out == ""
    assert not path.parent.exists()
