"""TensorBoard curves, read back with TensorBoard's own loader (plugin_event_accumulator, what `tensorboard
--logdir` runs without the Rust data server), and the sink interface around them.

Checks: every eval tag at every eval step with EvalPoint's values; the grid-name tree of symlinks that
TensorBoard's multiplexer follows, one name per grid of a shared run; a SIGKILL after an eval's events
and before its checkpoint, then a resume in a new process: the repeated steps are on disk twice but read
once (and without the purge they would be read twice); a failing sink is a warning, not a failed run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from fixtures.tensorboard import read_scalars
from fixtures.tiny import tiny_config
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.util import tensor_util

from haares.sinks import GuardedSinks, RunInfo, RunLabel, default_sinks
from haares.sinks.tensorboard import EVAL_TAGS, PROGRESS_PREFIX, TensorBoardSink, link_path
from haares.train import EvalPoint, Preempted, TrainCallbacks, train

SMOKE_42 = RunLabel("smoke", "", "haares", 42)


def raw_counts(logdir: Path) -> dict[tuple[str, int], int]:
    """How often each (tag, step) was written to the event files, purges ignored."""
    counts: dict[tuple[str, int], int] = {}
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert files, f"no event files in {logdir}"
    for path in files:
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                counts[(value.tag, event.step)] = counts.get((value.tag, event.step), 0) + 1
    return counts


def _point(step: int, val_loss: float) -> EvalPoint:
    return EvalPoint(step=step, tokens=step * 64, train_seconds=float(step), val_loss=val_loss,
                     val_ppl=math.exp(val_loss), val_bpb=val_loss / math.log(2), train_loss=val_loss + 0.1,
                     steps_per_s=10.0, tokens_per_s=640.0, peak_mem_bytes=2**30, device="cpu", grad_norm=0.5)


def _f32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float32))


def test_a_run_writes_every_eval_tag_at_every_eval_step(tmp_path):
    run_dir = tmp_path / "run"
    sinks = default_sinks(RunInfo("key", run_dir, tmp_path / "home", (SMOKE_42,)))
    try:
        result = train(tiny_config(steps=12, eval_every=4), device="cpu", run_dir=run_dir,
                       callbacks=sinks.wrap(TrainCallbacks(progress_interval_s=0)))
    finally:
        sinks.close()

    scalars = read_scalars(run_dir / "tb")
    assert set(EVAL_TAGS) | {PROGRESS_PREFIX + "loss", PROGRESS_PREFIX + "tokens_per_s"} == set(scalars)
    assert [p.step for p in result.evals] == [4, 8, 12]
    for tag, value_of in EVAL_TAGS.items():
        assert scalars[tag] == [(p.step, _f32(value_of(p))) for p in result.evals], tag
    assert all(0 < value < math.inf for _, value in scalars["train/grad_norm"])
    assert [step for step, _ in scalars["progress/loss"]] == list(range(1, 13))


def test_grid_names_are_relative_symlinks_that_tensorboard_follows(tmp_path):
    home = tmp_path / "home"
    labels = (SMOKE_42, RunLabel("depth", "12L", "haares", 42))
    sink = TensorBoardSink()
    sink.open(RunInfo("key", home / "runs" / "key", home, labels), 0)
    sink.log_eval(_point(5, 2.0))
    sink.close()

    assert not os.path.isabs(os.readlink(link_path(home, SMOKE_42)))
    multiplexer = EventMultiplexer(size_guidance={pea.TENSORS: 0})
    multiplexer.AddRunsFromDirectory(str(home / "tensorboard"))
    multiplexer.Reload()
    assert sorted(multiplexer.Runs()) == ["depth/12L/haares/seed42", "smoke/haares/seed42"]
    for run in multiplexer.Runs():
        events = multiplexer.Tensors(run, "loss/val")
        assert [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events] == [(5, 2.0)]

    # The same name trained again under other overrides (another run_key): the newest run owns it.
    other = TensorBoardSink()
    other.open(RunInfo("key2", home / "runs" / "key2", home, (SMOKE_42,)), 0)
    other.close()
    assert link_path(home, SMOKE_42).resolve() == (home / "runs" / "key2" / "tb").resolve()
    assert link_path(home, labels[1]).resolve() == (home / "runs" / "key" / "tb").resolve()


@pytest.mark.parametrize("purge", [True, False])
def test_reopening_at_a_step_hides_what_came_after_it(tmp_path, monkeypatch, purge):
    """The resume protocol in one process; without the purge the reader shows the repeated step twice,
    so the no-duplicates check of the kill test below can fail."""
    if not purge:
        from torch.utils import tensorboard

        real = tensorboard.SummaryWriter
        monkeypatch.setattr(tensorboard, "SummaryWriter", lambda *a, **k: real(*a, **{**k, "purge_step": None}))
    run = RunInfo("key", tmp_path / "run", tmp_path / "home")
    sink = TensorBoardSink()
    sink.open(run, 0)
    for step in (5, 10, 15):
        sink.log_eval(_point(step, 1.0))
    sink.close()
    sink.open(run, 10)  # the crash lost the checkpoint of step 15
    for step in (15, 20):
        sink.log_eval(_point(step, 2.0))
    sink.close()

    shown = [step for step, _ in read_scalars(tmp_path / "run" / "tb")["loss/val"]]
    assert shown == ([5, 10, 15, 20] if purge else [5, 10, 15, 15, 20])


KILLED_CHILD = r"""
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from pathlib import Path
from haares.config import RunConfig
from haares import train as t
from haares.sinks import RunInfo, RunLabel, default_sinks

cfg = RunConfig.from_dict(json.loads(sys.argv[1]))
run_dir, home, kill_at = Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])

def on_eval(point):
    if point.step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # the sinks wrote this eval; its checkpoint never comes

sinks = default_sinks(RunInfo(cfg.run_key(), run_dir, home, (RunLabel("smoke", "", "haares", 42),)))
callbacks = t.TrainCallbacks(on_eval=on_eval, progress_interval_s=0)
try:
    t.train(cfg, device="cpu", run_dir=run_dir, callbacks=sinks.wrap(callbacks))
finally:
    sinks.close()
"""


@pytest.mark.slow
def test_kill_after_an_eval_then_resume_in_a_new_process_shows_each_step_once(tmp_path):
    cfg = tiny_config(steps=20, eval_every=5)
    run_dir, home = tmp_path / "run", tmp_path / "home"

    def child(kill_at: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", KILLED_CHILD, cfg.to_json(), str(run_dir), str(home),
                               str(kill_at)], capture_output=True, text=True, timeout=180,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    crashed = child(15)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    resumed = child(0)
    assert resumed.returncode == 0, resumed.stderr
    twin = train(cfg, device="cpu", run_dir=tmp_path / "twin")

    # On disk the crash repeated steps 11..15 (progress) and 15 (the eval)...
    counts = raw_counts(run_dir / "tb")
    assert counts[("loss/val", 15)] == 2 and counts[("loss/val", 10)] == 1
    assert [counts[("progress/loss", s)] for s in range(11, 16)] == [2] * 5
    # ...and TensorBoard reads each step once, through the grid name too.
    for logdir in (run_dir / "tb", link_path(home, RunLabel("smoke", "", "haares", 42))):
        scalars = read_scalars(logdir)
        assert set(EVAL_TAGS) <= set(scalars)
        for tag, value_of in EVAL_TAGS.items():
            if tag in ("speed/tokens_per_s", "memory/peak_gib"):  # timings and memory differ between runs
                assert [s for s, _ in scalars[tag]] == [5, 10, 15, 20], tag
            else:
                assert scalars[tag] == [(p.step, _f32(value_of(p))) for p in twin.evals], tag
        assert [s for s, _ in scalars["progress/loss"]] == list(range(1, 21))


class Recording:
    """A sink that keeps what it was given."""

    def __init__(self) -> None:
        self.opened: list[int] = []
        self.evals: list[int] = []
        self.closed = 0

    def open(self, run: RunInfo, resume_step: int) -> None:
        self.opened.append(resume_step)

    def log_eval(self, point: EvalPoint) -> None:
        self.evals.append(point.step)

    def log_train(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        self.closed += 1


class Broken(Recording):
    """Fails at its first eval, like a sink on a full disk."""

    def log_eval(self, point: EvalPoint) -> None:
        super().log_eval(point)
        raise OSError("No space left on device")


def test_failing_sinks_are_warnings_and_the_run_finishes(tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "tb").write_text("a file where the event folder should be")  # TensorBoardSink.open fails
    broken, recording = Broken(), Recording()
    sinks = GuardedSinks([TensorBoardSink(), broken, recording], RunInfo("key", run_dir, tmp_path / "home"))
    seen: list[int] = []
    callbacks = sinks.wrap(TrainCallbacks(on_eval=lambda p: seen.append(p.step)))
    with caplog.at_level(logging.WARNING, logger="haares.sinks"):
        result = train(tiny_config(steps=6, eval_every=2), device="cpu", run_dir=run_dir, callbacks=callbacks)
        sinks.close()

    assert result.final_step == 6 and seen == [2, 4, 6]
    assert recording.opened == [0] and recording.evals == [2, 4, 6] and recording.closed == 1
    assert broken.evals == [2], "a failed sink is dropped, not called again"
    messages = [r.getMessage() for r in caplog.records]
    assert any("TensorBoardSink failed in open" in m for m in messages), messages
    assert any("Broken failed in log_eval" in m and "No space left" in m for m in messages), messages


def test_grad_norm_is_read_before_clipping():
    from haares.model import build_model
    from haares.step import TrainStep
    from haares.train import make_optimizer

    cfg = tiny_config()
    tokens = torch.randint(0, 64, (4, 17))
    for clip in (1e-3, 1e9):
        model = build_model(cfg.model, seed=0)
        optimizer = make_optimizer(model, cfg.train, torch.device("cpu"))
        _, norm = TrainStep(model, optimizer, grad_clip=clip, precision="fp32")(tokens)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
        if clip < 1:  # clipped: the grads now have norm `clip`, the reported norm is the one before
            assert float(after) == pytest.approx(clip, rel=1e-4) and float(norm) > 100 * clip
        else:
            assert float(norm) == pytest.approx(float(after), rel=1e-6)


def test_eval_grad_norm_is_the_mean_over_its_window(tmp_path, monkeypatch):
    from haares.step import TrainStep

    norms: list[float] = []
    real = TrainStep.__call__

    def recording(self, tokens):
        loss, norm = real(self, tokens)
        norms.append(float(norm))
        return loss, norm

    monkeypatch.setattr(TrainStep, "__call__", recording)
    result = train(tiny_config(steps=6, eval_every=3), device="cpu", run_dir=tmp_path / "run")
    assert len(norms) == 6
    assert [p.grad_norm for p in result.evals] == [pytest.approx(sum(norms[:3]) / 3, rel=1e-12),
                                                    pytest.approx(sum(norms[3:]) / 3, rel=1e-12)]


def test_evals_and_checkpoints_from_before_grad_norm_still_load(tmp_path):
    from haares.checkpoint import list_checkpoints, read_checkpoint, save_checkpoint

    cfg = tiny_config(steps=6, eval_every=2)
    run_dir = tmp_path / "run"
    stops = iter([False, False, False, True])  # stop at step 3: mid-window, one step counted
    with pytest.raises(Preempted, match="stopped at step 3"):
        train(cfg, device="cpu", run_dir=run_dir, should_stop=lambda: next(stops))
    step, path = list_checkpoints(run_dir / "checkpoints")[-1]
    assert step == 3
    snap = read_checkpoint(path)
    for record in snap["evals"]:
        del record["grad_norm"]
    del snap["window"]["grad_norm_sum"], snap["window"]["grad_norm_count"]
    save_checkpoint(run_dir / "checkpoints", step=3, state=snap)

    result = train(cfg, device="cpu", run_dir=run_dir)
    assert [p.step for p in result.evals] == [2, 4, 6]
    assert math.isnan(result.evals[0].grad_norm)
    assert all(0 < p.grad_norm < math.inf for p in result.evals[1:])  # step 4's window: step 4 alone
    old = json.loads((run_dir / "evals.jsonl").read_text().splitlines()[0])
    old.pop("grad_norm")
    assert math.isnan(EvalPoint(**old).grad_norm)


def test_haares_run_names_its_curves_by_grid(tmp_path, home):
    from fixtures.tiny import run_args as _args
    from typer.testing import CliRunner

    from haares.cli.app import app

    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, _args(run_dir))
    assert result.exit_code == 0, result.output
    link = home / "tensorboard" / "smoke" / "haares" / "seed42"
    assert link.resolve() == (run_dir / "tb").resolve()
    assert [s for s, _ in read_scalars(link)["loss/val"]] == [3, 6]


def test_worker_labels_come_from_every_grid_of_the_job(sqlite_url):
    from fixtures.workers import tiny_runs

    from haares.child import run_labels
    from haares.jobs import enqueue_runs, grid_labels, make_engine

    engine = make_engine(sqlite_url)
    spec = tiny_runs()[0]
    job_id = enqueue_runs(engine=engine, grid="smoke", runs=[spec]).job_ids[0]
    enqueue_runs(engine=engine, grid="again", runs=[replace(spec, cell="c1", method="m")])
    labels = run_labels(json.dumps(grid_labels(engine=engine, job_id=job_id)))
    assert labels == (RunLabel("again", "c1", "m", spec.seed), RunLabel("smoke", "", spec.method, spec.seed))
    assert run_labels("not json") == () and run_labels(None) == ()
    engine.dispose()


def test_the_sink_interface_imports_no_torch():
    code = "import sys, haares.sinks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
