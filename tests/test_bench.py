"""`haares bench` times the trainer's own step and refuses to vouch for a path it did not check.

Runs end to end on the CPU (tiny model); the verdict logic is tested on results built by hand, so a
missing check or one over its bar is proven to fail.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from haares import bench
from haares.config import ModelConfig
from haares.equivalence import check_bars, equivalence, plain_bf16_twins, problems
from haares.fastpath import FastPath


@pytest.mark.slow
def test_bench_cli_tiny_cpu_checks_every_fast_path(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "haares.cli.app", "bench", "--family", "small", "--layers", "2", "--blocks", "2",
         "--precision", "fp32", "--router", "reference,fused", "--batch-size", "2", "--seq-len", "16",
         "--steps", "2", "--warmup", "1", "--device", "cpu", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert {(r["scheme"], r["router"]) for r in result["rows"]} == {
        ("standard", "reference"), ("block_attnres", "reference"), ("block_attnres", "fused"),
        ("haares", "reference"), ("haares", "fused"),
    }
    assert all(r["steps_per_s"] > 0 and r["cuda_graph"] is False for r in result["rows"])
    checked = {(c["scheme"], c["router"]) for c in result["checks"]}
    assert checked == {("block_attnres", "fused"), ("haares", "fused")}
    assert all(c["passed"] and c["grads_rel_err"] < 1e-5 for c in result["checks"])
    assert problems(result) == []
    assert "| haares | fp32 | fused | no | no |" in proc.stdout


def _row(scheme="haares", precision="fp32", router="fused", compiled=False):
    return {"scheme": scheme, "precision": precision, "router": router, "compiled": compiled, "cuda_graph": False}


def _check(err, **row):
    return {**_row(**row), "logits_rel_err": err, "grads_rel_err": err}


def test_a_fast_path_without_its_check_is_a_problem():
    result = {"rows": [_row(), _row(router="reference")], "checks": []}
    assert problems(result) == ["no equivalence check for haares/fp32/fused/False/False"]
    assert problems({"rows": [], "checks": []}) == ["no configuration was measured"]


def test_checks_over_their_bars_fail():
    """bf16 bars are 1.5x the plain bf16 error of the same scheme; each bf16 row reports its ratio to Standard's."""
    checks = check_bars([
        _check(2e-5),  # fp32 over 1e-5
        _check(3e-7, scheme="block_attnres"),
        _check(1e-2, scheme="standard", precision="bf16", router="reference"),  # plain: the yardsticks
        _check(1.7e-2, scheme="haares", precision="bf16", router="reference"),
        _check(2.5e-2, precision="bf16"),  # under 1.5 x 1.7e-2
        _check(2.6e-2, precision="bf16", compiled=True),  # over it
        _check(1.6e-2, scheme="block_attnres", precision="bf16"),  # no plain Block AttnRes bf16 twin: unknown bar
        _check(float("nan"), scheme="block_attnres", router="reference", compiled=True),
    ])
    assert [c["passed"] for c in checks] == [False, True, True, True, True, False, False, False]
    assert checks[4]["grads_bar"] == pytest.approx(2.55e-2)
    assert [round(c.get("vs_standard", 0), 2) for c in checks] == [0, 0, 1.0, 1.7, 2.5, 2.6, 1.6, 0]
    assert len(problems({"rows": [_row()], "checks": checks})) == 4


def test_plain_bf16_twins_cover_each_scheme_with_a_bf16_check_and_standard():
    found = [_check(1e-2, scheme="haares", precision="bf16"), _check(1e-6, scheme="block_attnres")]
    twins = plain_bf16_twins(found, "small", 2, 2, 64, torch.device("cpu"))
    assert [(t["scheme"], t["router"], t["compiled"], t["precision"]) for t in twins] == [
        ("standard", "reference", False, "bf16"), ("haares", "reference", False, "bf16")]
    assert all(0 < t["grads_rel_err"] < 5e-2 for t in twins)
    assert plain_bf16_twins([_check(1e-6)], "small", 2, 2, 64, torch.device("cpu")) == []


def test_a_broken_fast_path_is_caught(monkeypatch):
    cfg = ModelConfig(d_model=32, d_ff=64, n_layers=2, n_heads=2, blocks=2, vocab_size=64, residual="haares")
    fast = FastPath(router="fused", compile=False, cuda_graph=False)
    good = equivalence(cfg, device=torch.device("cpu"), fast=fast, precision="fp32", seq_len=16)
    assert good["logits_rel_err"] < 1e-5 and good["grads_rel_err"] < 1e-5
    from haares.residual import fused_router

    original = fused_router._forward

    def off_by_a_bit(values, u, biases, eps):
        h, a, r, s = original(values, u, biases, eps)
        return h * (1 + 1e-4), a, r, s

    monkeypatch.setattr(fused_router, "_forward", off_by_a_bit)
    bad = equivalence(cfg, device=torch.device("cpu"), fast=fast, precision="fp32", seq_len=16)
    checks = check_bars([{**_row(), **bad}])
    assert not checks[0]["passed"]


def test_cuda_graph_on_cpu_is_refused():
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        bench.run_bench(family_name="small", n_layers=2, schemes=["standard"], precisions=["fp32"],
                        routers=["reference"], compile_options=[False], graph_options=[True], batch_size=2,
                        seq_len=16, steps=1, warmup=0, device=torch.device("cpu"), blocks=2)


def test_bench_rejects_unknown_family():
    proc = subprocess.run([sys.executable, "-m", "haares.cli.app", "bench", "--family", "huge"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown family" in proc.stderr
