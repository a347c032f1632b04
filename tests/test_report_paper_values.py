"""Checks that `--paper` values reach the reader: the default rich table shows `[paper x]` (rich must not
read it as markup), on a terminal and in a pipe, and the stated numbers print as the paper prints them
(-0.0313, not the float subtraction -0.031300000000000106).
"""

from __future__ import annotations

import io
import json

from fixtures.report_db import build_grid_db
from rich.console import Console

from haares.grids import GRIDS, expand
from haares.results import paper, reports
from haares.results.render import rich_report

MAIN48 = {(r.cell, r.method, r.seed): {"evals": [(2000, 1.9 - 0.01 * r.method_index)]} for r in expand(GRIDS["main48"])}


def test_paper_values_show_in_the_piped_table(cli, sqlite_url):
    build_grid_db(sqlite_url, "main48", MAIN48).dispose()
    code, out, err = cli("report", "--table", "4", "--paper", "--db", sqlite_url)
    assert code == 0, err
    assert "[paper 1.7995]" in out and "[paper -0.0168]" in out and "[paper -0.0313]" in out


def test_paper_values_show_on_a_terminal(sqlite_url):
    engine = build_grid_db(sqlite_url, "main48", MAIN48)
    report = reports.build_report(engine, 12, GRIDS["main48"], with_paper=True)
    console = Console(file=io.StringIO(), width=300, force_terminal=True, color_system=None)
    console.print(rich_report(report))
    text = console.file.getvalue()
    assert "[paper 1.7995]" in text and "[paper 1.7961]" in text


def _stated_numbers(node: object) -> list[float]:
    if isinstance(node, dict):
        return [x for value in node.values() for x in _stated_numbers(value)]
    return [node] if isinstance(node, float) else []


def test_stated_numbers_have_the_papers_decimals():
    numbers = [x for table in (paper.MEAN_LOSS, paper.SEED_LOSS, paper.SEED_DELTA, paper.MEAN_DELTA, paper.TABLE12_SEEDS)
               for x in _stated_numbers(table)]
    assert numbers
    assert [x for x in numbers if repr(x) != repr(round(x, 4))] == []


def test_json_report_with_paper_has_no_float_noise(cli, sqlite_url):
    build_grid_db(sqlite_url, "main48", MAIN48).dispose()
    code, out, err = cli("report", "--table", "4", "--paper", "--format", "json", "--db", sqlite_url)
    assert code == 0, err
    json.loads(out)
    assert "-0.0313" in out and "-0.03130000" not in out
