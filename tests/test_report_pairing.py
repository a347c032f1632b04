"""Reports prove pairing from the batch-order hashes finished runs recorded: identical within every
finished pair, or a loud caption naming the broken pairs."""

from __future__ import annotations

from fixtures.report_db import build_grid_db

from haares.grids import GRIDS
from haares.results import reports


def _caption(sqlite_url, hashes):
    results = {("", method, seed): {"evals": [(50, 2.0)], "batch_order_hash": h} for (method, seed), h in hashes.items()}
    engine = build_grid_db(sqlite_url, "smoke", results)
    report = reports.build_report(engine, 4, GRIDS["smoke"])
    return " | ".join(report.caption)


def test_identical_hashes_are_reported_as_checked(sqlite_url):
    hashes = {(m, s): f"order-{s}" for m in ("standard", "block_attnres", "haares") for s in (42, 123)}
    text = _caption(sqlite_url, hashes)
    assert "pairing checked: the 2 finished pair(s) saw identical batch orders" in text
    assert "BROKEN" not in text


def test_a_different_batch_order_breaks_the_pair_loudly(sqlite_url):
    hashes = {(m, s): "same" for m in ("standard", "block_attnres", "haares") for s in (42, 123)}
    hashes[("haares", 123)] = "other"
    text = _caption(sqlite_url, hashes)
    assert "PAIRING BROKEN: runs of seed 123 saw different batch orders" in text
