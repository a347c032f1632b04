"""Checks `enqueue` for hosts without the Hugging Face hub: `--set key=value` (repeatable, as `run` takes)
and `--path` (local data) reach every stored run config and its run key; a key given twice is refused
with nothing written; and a real worker, offline, trains a job enqueued with `--path` from that file.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from fixtures.queue import dump
from fixtures.workers import HAARES, TINY, rows

from haares.jobs.db import make_engine


def configs(url: str) -> list[dict]:
    return [json.loads(c) for (c,) in rows(make_engine(url), "SELECT config_json FROM jobs ORDER BY id")]


def test_set_and_path_reach_every_run(cli, sqlite_url, tmp_path, monkeypatch):
    text = tmp_path / "corpus.txt"
    text.write_text("hello\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("enqueue", "--grid", "smoke", "--set", "train.lr=0.001",
                         "--set", "data.dataset=tinystories", "--path", "corpus.txt", "--db", sqlite_url)
    assert code == 0, err
    found = configs(sqlite_url)
    assert len(found) == 6
    assert {c["train"]["lr"] for c in found} == {0.001}
    assert {(c["data"]["dataset"], c["data"]["path"]) for c in found} == {("tinystories", str(text))}


def test_a_key_given_twice_is_refused(cli, sqlite_url):
    make_engine(sqlite_url).dispose()
    before = dump(sqlite_url)
    code, out, err = cli("enqueue", "--grid", "smoke", "--steps", "5", "--set", "train.steps=7",
                         "--db", sqlite_url)
    assert code == 2 and out == "" and err.startswith("error: train.steps is given twice")
    code, _, err = cli("enqueue", "--grid", "smoke", "--set", "train.nosuch=1", "--db", sqlite_url)
    assert code == 2 and "unknown config key" in err
    assert dump(sqlite_url) == before


@pytest.mark.slow
def test_an_offline_worker_trains_from_the_enqueued_path(sqlite_url, home, tmp_path):
    corpus = tmp_path / "local.txt"
    corpus.write_text("\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog." for i in range(400)))
    sets = [f"--set={k}={v}" for k, v in {**TINY, "train.steps": 4, "train.eval_every": 2}.items()]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    enq = subprocess.run([HAARES, "enqueue", "--grid", "smoke", "--seeds", "42", "--set", "data.dataset=tinystories",
                          "--path", str(corpus), *sets, "--db", sqlite_url], capture_output=True, text=True, env=env)
    assert enq.returncode == 0, enq.stderr
    worker = subprocess.run([HAARES, "worker", "--gpu", "cpu", "--once", "--db", sqlite_url], capture_output=True,
                            text=True, env=env, timeout=300)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    engine = make_engine(sqlite_url)
    done = rows(engine, "SELECT status, best_val_loss FROM jobs WHERE status = 'succeeded'")
    assert len(done) == 1 and done[0][1] is not None, rows(engine, "SELECT status, error_summary FROM jobs")
