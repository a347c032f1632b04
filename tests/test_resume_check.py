"""benchmarks/resume_check.py (the GPU resume check of issue 11) on the CPU, through its command line:
a preempted and resumed run matches its uninterrupted twin and its repeat bitwise here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_resume_check_on_the_cpu_is_bitwise(tmp_path, monkeypatch):
    monkeypatch.setenv("HAARES_HOME", str(tmp_path / "home"))
    out = tmp_path / "resume.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "resume_check.py"), "--grid", "smoke", "--method", "haares",
         "--steps", "6", "--eval-every", "2", "--stop-at", "3", "--repeat", "--device", "cpu", "--json", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["stopped_at"] == 3
    assert [step for step, _ in result["evals"]["twin"]] == [2, 4, 6]
    assert result["evals"]["resumed"] == result["evals"]["twin"] == result["evals"]["repeat"]
    assert result["resumed_vs_twin"] == 0.0 and result["repeat_vs_twin"] == 0.0
    assert "largest |resumed - twin| 0" in done.stdout
