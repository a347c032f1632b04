"""The golf grid end to end on the CPU: `haares enqueue --grid golf_tiny`, a real `haares worker --gpu
cpu` draining it, and `haares report --grid golf_tiny` showing loss and bits per byte for every method;
the full-size `golf` grid's runs (dry run), its matched parameter counts, and the bpb of a run's
best-loss evaluation in the run summary (hand-built frames).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fixtures.workers import rows, start_worker

from haares import cost
from haares.grids import GRIDS, expand
from haares.jobs.db import make_engine
from haares.results import frames
from haares.results.render import name

GOLF_METHODS = ["standard", "block_attnres", "haares", "value_gate", "recurrent", "unet", "golf_attnres", "muon"]


def test_golf_grid_has_matched_parameter_counts_at_48_effective_layers():
    runs = expand(GRIDS["golf"], seeds=(42,))
    assert [r.method for r in runs] == GOLF_METHODS
    counts = {r.method: cost.param_count(r.config.model) for r in runs}
    base = counts["standard"]
    assert base == 22_065_280
    assert all(abs(n / base - 1) < 0.005 for n in counts.values()), counts
    for r in runs:
        assert cost.effective_layers(r.config.model) == 48, r.method
        assert (r.config.data.dataset, r.config.data.tokenizer) == ("offline_english", "char")
        assert r.config.model.d_model == (256 if r.method == "recurrent" else 128)
    assert [r.method for r in expand(GRIDS["golf_tiny"], seeds=(42,))] == GOLF_METHODS


def test_run_summary_takes_the_bpb_of_the_best_loss_eval():
    runs = pd.DataFrame({"job_id": [1, 2], "status": ["succeeded", "running"], "step": [3, 1]})
    evals = pd.DataFrame({"job_id": [1, 1, 1, 2], "val_loss": [2.0, 1.5, 1.7, 3.0], "val_bpb": [2.9, 2.2, 2.4, 4.0]})
    summary = frames.run_summary(runs, evals).set_index("job_id")
    assert summary.loc[1, "best"] == 1.5 and summary.loc[1, "best_bpb"] == 2.2
    assert pd.isna(summary.loc[2, "best_bpb"])  # not complete: no number, like best


def test_enqueue_golf_dry_run_lists_every_pair(cli, sqlite_url):
    code, out, err = cli("enqueue", "--grid", "golf", "--dry-run", "--db", sqlite_url)
    assert code == 0, err
    assert sum(method in out for method in GOLF_METHODS) == len(GOLF_METHODS)


@pytest.mark.slow
def test_golf_tiny_enqueue_worker_report_on_cpu(cli, sqlite_url, tmp_path, home):
    code, _, err = cli("enqueue", "--grid", "golf_tiny", "--seeds", "42", "--db", sqlite_url)
    assert code == 0, err
    worker = start_worker(sqlite_url, "--gpu", "cpu", "--slots", "2", log=tmp_path / "w.log")
    assert worker.wait(timeout=240) == 0, (tmp_path / "w.log").read_text()[-3000:]
    engine = make_engine(sqlite_url)
    assert rows(engine, "SELECT status, COUNT(*) FROM jobs GROUP BY status") == [("succeeded", len(GOLF_METHODS))]
    engine.dispose()

    code, out, err = cli("report", "--grid", "golf_tiny", "--format", "json", "--db", sqlite_url)
    assert code == 0, err
    report = json.loads(out)
    text = json.dumps(report)
    assert "bits per byte" in text and "paired" in text
    code, out, err = cli("report", "--grid", "golf_tiny", "--format", "md", "--db", sqlite_url)
    assert code == 0, err
    bpb_table = out.split("bits per byte at the best-loss eval")[1].split("\n\n")[1]
    header, _, row_42 = bpb_table.splitlines()[:3]
    assert all(name(m) in header for m in GOLF_METHODS), header
    values = [cell.strip() for cell in row_42.split("|")[2:-1]]
    assert len(values) == len(GOLF_METHODS) and all(0.5 < float(v) < 12 for v in values), row_42
