"""`haares run`: picking a grid run, training it in the foreground, interrupt and resume, one-line errors.

Runs the smoke grid shrunk by --set overrides (d=32, 2 layers, T=16, a few steps) on the CPU
through Typer's CliRunner; the user-error path goes through the real console script.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.tiny import run_args as _args
from typer.testing import CliRunner

from haares.cli.app import app
from haares.errors import HaaresError
from haares.runner import resolve_run, resume_command


def test_resolve_run_applies_method_seed_and_overrides():
    spec = resolve_run(grid="smoke", method="block_attnres", seed=123, sets=["train.steps=7"])
    assert (spec.method, spec.seed, spec.config.seed) == ("block_attnres", 123, 123)
    assert spec.config.model.residual == "block_attnres" and spec.config.train.steps == 7


def test_resolve_run_names_what_exists():
    with pytest.raises(HaaresError, match="its methods: standard, block_attnres, haares"):
        resolve_run(grid="smoke", method="nope", seed=42)
    with pytest.raises(HaaresError, match="pass --cell, one of: 12L, 24L, 48L"):
        resolve_run(grid="depth", method="haares", seed=42)
    with pytest.raises(HaaresError, match="no cell"):
        resolve_run(grid="depth", method="haares", seed=42, cell="7L")
    with pytest.raises(HaaresError, match="seeds"):
        resolve_run(grid="smoke", method="haares", seed=5)
    assert resolve_run(grid="depth", method="haares", seed=42, cell="24L").config.model.n_layers == 24


def test_run_trains_to_completion(tmp_path):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, _args(run_dir))
    assert result.exit_code == 0, result.output
    assert "done: best val loss" in result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["complete"] is True and summary["final_step"] == 6
    assert summary["config"]["model"]["d_model"] == 32
    assert len((run_dir / "evals.jsonl").read_text().splitlines()) == 2


class _StopAfter:
    """A should_stop that turns true at the n-th step boundary (stands in for Ctrl-C)."""

    def __init__(self, n: int) -> None:
        self.calls, self.n = 0, n

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.n

    def restore(self) -> None:
        pass


def test_interrupt_checkpoints_prints_resume_command_and_rerun_resumes(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setattr("haares.train.install_sigterm_handler", lambda: _StopAfter(3))
    interrupted = CliRunner().invoke(app, _args(run_dir))
    assert interrupted.exit_code == 130, interrupted.output
    line = next(ln for ln in interrupted.output.splitlines() if ln.startswith("interrupted"))
    assert line.startswith("interrupted at step 2;") and "resume with: haares run --grid smoke" in line
    assert (run_dir / "checkpoints" / "step_00000002.ckpt").exists()

    monkeypatch.undo()
    import haares.train

    loaded_steps = []
    original = haares.train.load_latest_checkpoint

    def spy(ckpt_dir):
        found = original(ckpt_dir)
        loaded_steps.append(found[1]["step"] if found else None)
        return found

    monkeypatch.setattr(haares.train, "load_latest_checkpoint", spy)
    resumed = CliRunner().invoke(app, _args(run_dir))
    assert resumed.exit_code == 0, resumed.output
    assert loaded_steps == [2], "the rerun did not resume from the interrupt's checkpoint"
    assert "step 3: val loss" in resumed.output and "step 6: val loss" in resumed.output
    assert json.loads((run_dir / "summary.json").read_text())["final_step"] == 6


def test_resume_command_repeats_the_arguments():
    line = resume_command(grid="depth", method="haares", seed=42, cell="24L", sets=["train.steps=9"],
                          device=None, run_dir=Path("/tmp/a b"))
    assert line == "haares run --grid depth --method haares --seed 42 --cell 24L --set train.steps=9 --run-dir '/tmp/a b'"


def test_user_error_is_one_line_and_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "haares.cli.app", "run", "--grid", "smoke", "--method", "nope", "--seed", "42"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: grid 'smoke' has no method 'nope'; its methods: standard, block_attnres, haares"
    ]
