"""`haares bench` runs end to end on the CPU (tiny model) and reports every scheme with its equivalence check."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_cli_tiny_cpu(tmp_path):
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
    assert all(r["steps_per_s"] > 0 for r in result["rows"])
    assert all(c["grads_rel_err"] < 1e-5 for c in result["checks"])
    assert "| haares | fp32 | fused |" in proc.stdout


def test_bench_rejects_unknown_family():
    proc = subprocess.run([sys.executable, "-m", "haares.cli.app", "bench", "--family", "huge"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown family" in proc.stderr
