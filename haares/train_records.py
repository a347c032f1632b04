"""What a training run records and carries across a resume: its evaluations, its result, the
accumulators of the current evaluation window, and the checkpoint and summary.json contents.

The loop itself is train.py's; this file owns the data it keeps and how that data is written and
restored, so a reader can check the exact-resume contract in one place. No queue, no model code.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from haares.checkpoint import atomic_write_text, rng_state, set_rng_state
from haares.config import RunConfig
from haares.errors import HaaresError
from haares.fastpath import FastPath


class Preempted(Exception):
    """Training stopped at a step boundary on request; a checkpoint of `step` was written first."""

    def __init__(self, step: int) -> None:
        self.step = step
        super().__init__(f"stopped at step {step} on request; checkpoint written, resume to continue")


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite: the run diverged (a terminal failure, not retried)."""

    def __init__(self, step: int, value: float, *, split: str = "training") -> None:
        self.step = step
        self.value = value
        super().__init__(f"non-finite {split} loss {value} at step {step}")


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation. Speeds cover the window since the previous evaluation, eval and checkpoint excluded."""

    step: int
    """Optimizer steps completed."""
    tokens: int
    """Training tokens consumed: step x batch_size x seq_len."""
    train_seconds: float
    """Training clock so far (s), across resumes; eval, checkpoint and compile warm-up excluded."""
    val_loss: float
    """Mean cross-entropy per validation token (nats)."""
    val_ppl: float
    """exp(val_loss)."""
    val_bpb: float
    """Bits per UTF-8 byte of the evaluated validation text."""
    train_loss: float
    """Mean training loss (nats) over the steps of the window."""
    steps_per_s: float
    tokens_per_s: float
    peak_mem_bytes: int
    """Peak device memory of this process (CUDA max allocated; peak RSS on the CPU)."""
    device: str
    grad_norm: float = math.nan
    """Mean gradient norm before clipping over the steps of the window (NaN in evals written before it existed)."""


@dataclass(frozen=True)
class RunResult:
    """What a finished run reports; evals include those made before any resume."""

    best_val_loss: float
    best_step: int
    final_step: int
    evals: list[EvalPoint]
    batch_order_hash: str
    device: str
    summary: Path
    """run_dir/summary.json."""


@dataclass
class Window:
    """Accumulators since the previous evaluation (saved in checkpoints, so resumes keep them exact)."""

    start_seconds: float = 0.0
    timed_steps: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    # Counted apart from losses: a checkpoint written before grad norms existed restores without them.
    grad_norm_sum: float = 0.0
    grad_norm_count: int = 0


@dataclass
class State:
    """Everything besides model and optimizer that a checkpoint must restore."""

    step: int = 0
    best_val_loss: float = math.inf
    best_step: int = -1
    evals: list[EvalPoint] = field(default_factory=list)
    train_seconds: float = 0.0
    warmup_seconds: float = 0.0
    window: Window = field(default_factory=Window)


class LossLog:
    """Training losses and gradient norms left on the device until read in one sync.

    Raises NonFiniteLoss naming the step of the first non-finite loss.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.last = math.nan

    def add(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.pending.append((step, loss, grad_norm))

    def flush(self, window: Window) -> None:
        if not self.pending:
            return
        values = torch.stack([torch.stack((loss.float(), norm.float())) for _, loss, norm in self.pending]).tolist()
        steps = [step for step, _, _ in self.pending]
        self.pending = []
        for step, (value, norm) in zip(steps, values, strict=True):
            if not math.isfinite(value):
                raise NonFiniteLoss(step, value)
            window.loss_sum += value
            window.grad_norm_sum += norm
            window.grad_norm_count += 1
            window.loss_count += 1
            self.last = value


def snapshot(
    state: State,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    cfg: RunConfig,
    identity: dict[str, str],
) -> dict[str, Any]:
    return {
        "format": 1,
        **identity,
        "config": cfg.to_dict(),
        "step": state.step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(device),
        "best_val_loss": state.best_val_loss,
        "best_step": state.best_step,
        "evals": [asdict(p) for p in state.evals],
        "train_seconds": state.train_seconds,
        "warmup_seconds": state.warmup_seconds,
        "window": asdict(state.window),
    }


def restore(
    loaded: tuple[Path, dict[str, Any]],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    identity: dict[str, str],
) -> State:
    path, snap = loaded
    for key, expected in identity.items():
        if snap.get(key) != expected:
            raise HaaresError(
                f"checkpoint {path} has {key}={snap.get(key)!r} but this run has {expected!r}; "
                f"train in another run dir or start over with --fresh (resume=False)"
            )
    model.load_state_dict(snap["model"])
    optimizer.load_state_dict(snap["optimizer"])
    set_rng_state(snap["rng"], device)
    return State(
        step=int(snap["step"]),
        best_val_loss=float(snap["best_val_loss"]),
        best_step=int(snap["best_step"]),
        evals=[EvalPoint(**p) for p in snap["evals"]],
        train_seconds=float(snap["train_seconds"]),
        warmup_seconds=float(snap["warmup_seconds"]),
        window=Window(**snap["window"]),
    )


def write_summary(
    run_dir: Path,
    cfg: RunConfig,
    state: State,
    identity: dict[str, str],
    device: str,
    *,
    code: dict[str, Any],
    fast: FastPath,
    complete: bool,
) -> Path:
    """run_dir/summary.json: config, provenance, pairing hash and the best result so far."""
    path = run_dir / "summary.json"
    summary = {
        **identity,
        "config": cfg.to_dict(),
        "code": code,
        "torch": torch.__version__,
        "device": device,
        "best_val_loss": state.best_val_loss if state.evals else None,
        "best_step": state.best_step if state.evals else None,
        "final_step": state.step,
        "total_steps": cfg.train.steps,
        "fast_path": fast.to_dict(),
        "complete": complete,
        "train_seconds": state.train_seconds,
        "warmup_seconds": state.warmup_seconds,
        "n_evals": len(state.evals),
    }
    atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path


def jsonl(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True) + "\n"
