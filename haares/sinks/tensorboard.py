"""TensorBoard sink: each run's scalars in <run_dir>/tb, named by grid under <home>/tensorboard (docs/tensorboard.md).

Events are written once, in the run directory (keyed by run_key, like the checkpoints), by
torch.utils.tensorboard's SummaryWriter. Grid names are a tree of relative symlinks,
<home>/tensorboard/<grid>/[<cell>/]<method>/seed<seed> -> that run's tb folder: a run shared by
several grids is trained and logged once and still appears in every grid; TensorBoard follows the links.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from haares.sinks.base import RunInfo, RunLabel
    from haares.train import EvalPoint

log = logging.getLogger("haares.sinks")

TB_DIR = "tb"
"""The event folder inside a run directory."""
TREE_DIR = "tensorboard"
"""The tree of grid names under the results home: `tensorboard --logdir <home>/tensorboard`."""

EVAL_TAGS: dict[str, Callable[[EvalPoint], float]] = {
    "loss/train": lambda p: p.train_loss,
    "loss/val": lambda p: p.val_loss,
    "val/ppl": lambda p: p.val_ppl,
    "val/bpb": lambda p: p.val_bpb,
    "speed/tokens_per_s": lambda p: p.tokens_per_s,
    "train/grad_norm": lambda p: p.grad_norm,
    "memory/peak_gib": lambda p: p.peak_mem_bytes / 2**30,
}
"""One scalar per evaluation, at its step. TensorBoard groups cards by the part before '/', so train
and val loss share the "loss" group. docs/tensorboard.md says what each one means."""
PROGRESS_PREFIX = "progress/"
"""log_train metrics ("loss", "tokens_per_s") are written as progress/<name>."""

_EVENT_FILE = re.compile(r"^events\.out\.tfevents\.(\d+)\.")


class TensorBoardSink:
    """A MetricSink writing TensorBoard event files with SummaryWriter; one writer per open()."""

    def __init__(self, *, flush_secs: int = 30) -> None:
        self.flush_secs = flush_secs
        self.writer: Any = None

    def open(self, run: RunInfo, resume_step: int) -> None:
        """Start a new event file that hides every event of a step after `resume_step`.

        SummaryWriter(purge_step=s) writes a SessionLog.START at step s; on reading, TensorBoard drops
        every earlier-read event with step >= s. So steps a crashed attempt wrote past its last
        checkpoint are not shown twice. Passed on fresh starts too (s = 1 hides everything): the
        Python loader ignores a run's first START and purges on the later ones.
        """
        from torch.utils.tensorboard import SummaryWriter

        self.close()
        logdir = Path(run.run_dir) / TB_DIR
        logdir.mkdir(parents=True, exist_ok=True)
        _wait_for_a_later_second(logdir)
        self.writer = SummaryWriter(str(logdir), purge_step=resume_step + 1, flush_secs=self.flush_secs)
        for label in run.labels:
            link_run(Path(run.home), label, logdir)

    def log_eval(self, point: EvalPoint) -> None:
        """Every EVAL_TAGS scalar at point.step (NaN ones left out), then flush: a crash loses no eval."""
        writer = self._writer()
        for tag, value_of in EVAL_TAGS.items():
            value = float(value_of(point))
            if not math.isnan(value):
                writer.add_scalar(tag, value, point.step)
        writer.flush()

    def log_train(self, step: int, metrics: dict[str, float]) -> None:
        """progress/<name> scalars at `step`; flushed by the writer's timer or the next eval."""
        writer = self._writer()
        for name, value in metrics.items():
            writer.add_scalar(PROGRESS_PREFIX + name, float(value), step)

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()

    def _writer(self) -> Any:
        if self.writer is None:
            raise RuntimeError("TensorBoardSink used before open()")
        return self.writer


def link_path(home: Path, label: RunLabel) -> Path:
    """<home>/tensorboard/<grid>/[<cell>/]<method>/seed<seed>: the run's name in TensorBoard."""
    parts = [label.grid, label.cell, label.method] if label.cell else [label.grid, label.method]
    # A name is one path component: no separators, no "..".
    safe = [part.replace(os.sep, "_").replace("..", "_") for part in parts]
    return Path(home, TREE_DIR, *safe, f"seed{label.seed}")


def link_run(home: Path, label: RunLabel, logdir: Path) -> Path:
    """Point `label`'s name at `logdir` with a relative symlink (the results home can move as a whole).

    Idempotent. A name already pointing elsewhere (the same grid cell, method and seed trained again
    with other overrides, hence another run_key) is repointed: the newest run owns the name.
    """
    link = link_path(home, label)
    link.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(Path(logdir).resolve(), link.parent.resolve())
    if link.is_symlink() and os.readlink(link) == target:
        return link
    # Replace atomically: a TensorBoard reading the tree never sees the name missing.
    temp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    if temp.is_symlink() or temp.exists():
        temp.unlink()
    os.symlink(target, temp, target_is_directory=True)
    os.replace(temp, link)
    return link


def _wait_for_a_later_second(logdir: Path, limit_s: float = 3.0) -> None:
    """Wait until time.time() is past the newest event file's timestamp in `logdir`.

    Event files are read in name order and the name starts with the creation second; a resume in
    the same second as the last file's creation could otherwise sort before it, and its purge
    would come before the events it must hide.
    """
    stamps = [int(m.group(1)) for p in logdir.iterdir() if (m := _EVENT_FILE.match(p.name))]
    newest = max(stamps, default=0)
    deadline = time.monotonic() + limit_s
    while int(time.time()) <= newest:
        if time.monotonic() > deadline:
            log.warning("event files in %s are from the future (clock skew?); resumed curves may show "
                        "repeated steps", logdir)
            return
        time.sleep(0.05)
