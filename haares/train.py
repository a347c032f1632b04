"""The training loop: the paper's protocol (product.md) as one plain function, `train()`.

Owns evaluation on the fixed validation set, the loop with its clock, resume from checkpoints, stop
requests (Preempted) and divergence (NonFiniteLoss). It knows nothing of the queue or the database:
callers pass callbacks. What a run records and restores is train_records.py's, the optimizer
optim.py's, the step step.py's, checkpoint files checkpoint.py's, clocks and memory measure.py's.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from haares.checkpoint import atomic_write_text, load_latest_checkpoint, save_checkpoint
from haares.config import RunConfig
from haares.errors import HaaresError
from haares.fastpath import FastPath, apply_fast_path, autocast, matmul_precision, resolve_fast_path
from haares.measure import TrainClock, code_version, device_name, peak_memory_bytes
from haares.optim import make_optimizer, param_groups  # noqa: F401 (re-exported: the trainer's optimizer)
from haares.step import TrainStep
from haares.train_records import (  # noqa: F401 (EvalPoint, RunResult and the exceptions are train's API)
    EvalPoint,
    LossLog,
    NonFiniteLoss,
    Preempted,
    RunResult,
    State,
    Window,
    jsonl,
    restore,
    snapshot,
    write_summary,
)

# On CUDA a loss is read back (a device sync) only every this many steps, unless something else
# needs it sooner (progress, evaluation, a stop request); on the CPU it is read every step.
CUDA_LOSS_SYNC_EVERY = 16


@dataclass
class TrainCallbacks:
    """Optional hooks; each is called in the training process, with the training clock stopped."""

    on_eval: Callable[[EvalPoint], None] | None = None
    on_progress: Callable[[int, float, float], None] | None = None
    """(step, latest training loss, tokens/s over the current window); throttled by progress_interval_s."""
    on_checkpoint: Callable[[int, Path], None] | None = None
    on_start: Callable[[int], None] | None = None
    """(step restored from a checkpoint, 0 for a fresh start); called once, before the first step."""
    progress_interval_s: float = 1.0
    """Minimum seconds between on_progress calls (0 = every step); the last step is always reported."""


# --- steps and evaluation -------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], *, n_bytes: int, precision: str
) -> tuple[float, float, float]:
    """(val_loss nats/token, PPL, bits per byte) over the fixed validation batches, token-weighted."""
    was_training = model.training
    model.eval()
    total = None
    n_tokens = 0
    for inputs, targets in batches:
        with autocast(precision, inputs.device):
            _, loss = model(inputs, targets)
        # Weight by tokens so a short last batch counts for what it holds; sum in fp64 on device.
        part = loss.double() * targets.numel()
        total = part if total is None else total + part
        n_tokens += targets.numel()
    model.train(was_training)
    if total is None or n_tokens == 0:
        raise HaaresError("the validation set is empty; raise data.eval_tokens or check the dataset")
    nats = float(total.item())
    val_loss = nats / n_tokens
    ppl = math.exp(val_loss) if val_loss < 700 else math.inf
    bpb = nats / math.log(2) / n_bytes if n_bytes > 0 else math.nan
    return val_loss, ppl, bpb


# --- signals ----------------------------------------------------------------------------------


class StopFlag:
    """`should_stop` for `train`: true once SIGTERM or SIGINT arrived; `restore()` puts the old handlers back."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self._event.is_set()

    def _handle(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and self._event.is_set():
            raise KeyboardInterrupt  # Ctrl-C twice: stop now, without a checkpoint
        self._event.set()

    def restore(self) -> None:
        """Reinstall the handlers that were in place before `install_sigterm_handler`."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def install_sigterm_handler() -> StopFlag:
    """Turn SIGTERM and SIGINT into a flag; returns the `should_stop` poll (a Callable[[], bool]) for `train`.

    A second SIGINT (Ctrl-C twice) raises KeyboardInterrupt at once. Call from the main thread.
    """
    flag = StopFlag()
    for signum in (signal.SIGTERM, signal.SIGINT):
        flag._previous[signum] = signal.signal(signum, flag._handle)
    return flag


# --- the loop ---------------------------------------------------------------------------------


@dataclass
class _Session:
    """One train() call's objects, built by `_open_session` (data, model, optimizer, step, state)."""

    cfg: RunConfig
    device: torch.device
    fast: FastPath
    run_dir: Path
    batches: Any
    eval_batches: list[tuple[torch.Tensor, torch.Tensor]]
    eval_bytes: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step_fn: TrainStep
    state: State
    identity: dict[str, str]
    device_name: str
    code: dict[str, Any]

    def checkpoint(self, step: int, clock: TrainClock, callbacks: TrainCallbacks) -> None:
        self.state.step = step
        self.state.train_seconds = clock.total
        snap = snapshot(self.state, self.model, self.optimizer, self.device, self.cfg, self.identity)
        path = save_checkpoint(self.run_dir / "checkpoints", step=step, state=snap)
        self.write_summary(complete=False)
        if callbacks.on_checkpoint:
            callbacks.on_checkpoint(step, path)

    def timed_step(self, tokens: torch.Tensor, clock: TrainClock) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step: (loss, grad norm). A step that compiles or captures is timed apart from training."""
        if self.step_fn.warming_up:
            clock.pause()
            warm_clock = TrainClock(self.device)
            warm_clock.resume()
            out = self.step_fn(tokens)
            self.state.warmup_seconds += warm_clock.pause()
        else:
            clock.resume()
            out = self.step_fn(tokens)
            self.state.window.timed_steps += 1
        return out

    def write_summary(self, *, complete: bool) -> Path:
        return write_summary(self.run_dir, self.cfg, self.state, self.identity, self.device_name,
                              code=self.code, fast=self.fast, complete=complete)


def train(
    cfg: RunConfig,
    *,
    device: str,
    run_dir: Path,
    callbacks: TrainCallbacks | None = None,
    resume: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Train `cfg` on `device` ("cpu", "cuda", "cuda:1"), writing checkpoints, evals.jsonl and summary.json.

    Steps are numbered by optimizer updates completed; update k (0-based) uses TrainBatches.batch(k),
    so a resumed run sees exactly the batches of its uninterrupted twin. Evaluates and checkpoints every
    train.eval_every steps and at the last step. With `resume`, continues from the newest valid checkpoint
    in run_dir/checkpoints; without, deletes earlier checkpoints and starts over. The step runs on the
    fast path that `cfg.train` resolves to on this device (haares/fastpath.py), recorded in summary.json.

    Raises Preempted(step) after checkpointing when `should_stop()` turns true (polled at every step
    boundary), NonFiniteLoss on a NaN/inf loss, HaaresError on a bad device or a run_dir of another run.
    """
    dev = _resolve_device(device)
    fast = resolve_fast_path(cfg.train, dev)  # config errors before minutes of data preparation
    with matmul_precision(cfg.train.precision):
        session = _open_session(cfg, dev, fast, Path(run_dir), resume=resume)
        return _loop(session, callbacks or TrainCallbacks(), should_stop)


def _open_session(cfg: RunConfig, dev: torch.device, fast: FastPath, run_dir: Path, *, resume: bool) -> _Session:
    """Data, model, optimizer and state (restored from the newest checkpoint when `resume`)."""
    from haares.data import EvalSet, TrainBatches, prepare
    from haares.model import build_model

    ckpt_dir = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    data = prepare(cfg.data, progress=False)
    if data.tokenizer.vocab_size > cfg.model.vocab_size:
        raise HaaresError(
            f"the {cfg.data.tokenizer} tokenizer has {data.tokenizer.vocab_size} ids but model.vocab_size is "
            f"{cfg.model.vocab_size}; set model.vocab_size={data.tokenizer.vocab_size}"
        )
    T = cfg.data.seq_len
    batches = TrainBatches(data.train, seq_len=T, batch_size=cfg.train.batch_size, data_seed=cfg.data.data_seed)
    eval_set = EvalSet(
        data.val, seq_len=T, batch_size=cfg.train.eval_batch_size,
        eval_tokens=cfg.data.eval_tokens, tokenizer=data.tokenizer,
    )
    # The validation set is fixed and small: keep it on the device for the whole run.
    eval_batches = [_split(_to_device(b, dev)) for b in eval_set.batches()]
    if dev.type == "cuda":
        # Peak memory is reported per run, not per process (a process may train several runs).
        torch.cuda.reset_peak_memory_stats(dev)
    model = build_model(cfg.model, seed=cfg.seed).to(dev)
    model.train()
    optimizer = make_optimizer(model, cfg.train, dev, capturable=fast.cuda_graph)
    identity = {"run_key": cfg.run_key(), "data_fingerprint": str(data.fingerprint),
                "batch_order_hash": batches.order_hash(cfg.train.steps)}
    state = State()
    if resume:
        loaded = load_latest_checkpoint(ckpt_dir)
        if loaded is not None:
            state = restore(loaded, model=model, optimizer=optimizer, device=dev, identity=identity)
    else:
        for stale in ckpt_dir.glob("*.ckpt"):
            stale.unlink()
    # evals.jsonl holds exactly the evaluations up to the restored step (drops those a crash repeated).
    atomic_write_text(run_dir / "evals.jsonl", "".join(jsonl(asdict(p)) for p in state.evals))
    # After the restore: a captured graph holds the very parameter and optimizer-state tensors.
    apply_fast_path(model, fast)
    step_fn = TrainStep(model, optimizer, grad_clip=cfg.train.grad_clip, precision=cfg.train.precision,
                        cuda_graph=fast.cuda_graph, compiled=fast.compile)
    return _Session(cfg=cfg, device=dev, fast=fast, run_dir=run_dir, batches=batches,
                    eval_batches=eval_batches, eval_bytes=eval_set.n_bytes, model=model, optimizer=optimizer,
                    step_fn=step_fn, state=state, identity=identity, device_name=device_name(dev),
                    code=code_version())


def _loop(run: _Session, callbacks: TrainCallbacks, should_stop: Callable[[], bool] | None) -> RunResult:
    """Step until cfg.train.steps, evaluating and checkpointing every eval_every steps."""
    cfg, state, dev = run.cfg, run.state, run.device
    clock = TrainClock(dev, total=state.train_seconds)
    losses = LossLog()
    sync_every = 1 if dev.type != "cuda" else CUDA_LOSS_SYNC_EVERY
    last_ckpt_step = state.step if state.step > 0 else -1
    last_progress = -math.inf
    tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
    step = state.step
    if callbacks.on_start:
        callbacks.on_start(step)
    while step < cfg.train.steps:
        if should_stop is not None and should_stop():
            clock.pause()
            losses.flush(state.window)
            if last_ckpt_step != step:
                run.checkpoint(step, clock, callbacks)
            raise Preempted(step)

        loss, grad_norm = run.timed_step(_to_device(run.batches.batch(step), dev), clock)
        step += 1
        losses.add(step, loss, grad_norm)

        is_eval = step % cfg.train.eval_every == 0 or step == cfg.train.steps
        now = time.monotonic()
        wants_progress = callbacks.on_progress is not None and (
            now - last_progress >= callbacks.progress_interval_s or step == cfg.train.steps
        )
        if is_eval or wants_progress or len(losses.pending) >= sync_every:
            losses.flush(state.window)
        if wants_progress:
            clock.pause()
            last_progress = now
            window_seconds = clock.total - state.window.start_seconds
            callbacks.on_progress(step, losses.last, _rate(state.window.timed_steps * tokens_per_step, window_seconds))
        if is_eval:
            clock.pause()
            _record_eval(run, step, clock.total, callbacks)
            run.checkpoint(step, clock, callbacks)
            last_ckpt_step = step

    clock.pause()
    state.step = step
    state.train_seconds = clock.total
    summary = run.write_summary(complete=True)
    return RunResult(
        best_val_loss=state.best_val_loss,
        best_step=state.best_step,
        final_step=step,
        evals=list(state.evals),
        batch_order_hash=run.identity["batch_order_hash"],
        device=run.device_name,
        summary=summary,
    )


def _record_eval(run: _Session, step: int, train_seconds: float, callbacks: TrainCallbacks) -> None:
    """Evaluate, append to evals.jsonl, call on_eval, and open a new window (clock already paused)."""
    state = run.state
    point = _evaluate_point(run.model, run.eval_batches, run.eval_bytes, run.cfg, state, train_seconds,
                            step, run.device, run.device_name)
    state.evals.append(point)
    if point.val_loss < state.best_val_loss:
        state.best_val_loss, state.best_step = point.val_loss, step
    with open(run.run_dir / "evals.jsonl", "a", encoding="utf-8") as handle:
        handle.write(jsonl(asdict(point)))
    # on_eval before the checkpoint: a crash in between repeats the eval (at least once),
    # rather than losing it (at most once); consumers key evals by step.
    if callbacks.on_eval:
        callbacks.on_eval(point)
    state.window = Window(start_seconds=train_seconds)


# --- helpers -----------------------------------------------------------------------------------


def _resolve_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise HaaresError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HaaresError(f"device {device!r} requested but torch sees no CUDA GPU; use --device cpu")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise HaaresError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise HaaresError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return dev


def _to_device(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, T+1) token ids -> an int64 tensor on `device` (copied asynchronously from pinned memory on CUDA)."""
    tokens = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.int64))
    if device.type == "cuda":
        tokens = tokens.pin_memory().to(device, non_blocking=True)
    return tokens


def _split(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T+1) -> inputs (B, T) and next-token targets (B, T)."""
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def _evaluate_point(
    model: nn.Module,
    eval_batches: list[tuple[torch.Tensor, torch.Tensor]],
    n_bytes: int,
    cfg: RunConfig,
    state: State,
    train_seconds: float,
    step: int,
    device: torch.device,
    name: str,
) -> EvalPoint:
    val_loss, ppl, bpb = evaluate(model, eval_batches, n_bytes=n_bytes, precision=cfg.train.precision)
    if not math.isfinite(val_loss):
        raise NonFiniteLoss(step, val_loss, split="validation")
    window = state.window
    seconds = train_seconds - window.start_seconds
    tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
    return EvalPoint(
        step=step,
        tokens=step * tokens_per_step,
        train_seconds=train_seconds,
        val_loss=val_loss,
        val_ppl=ppl,
        val_bpb=bpb,
        train_loss=window.loss_sum / window.loss_count if window.loss_count else math.nan,
        grad_norm=window.grad_norm_sum / window.grad_norm_count if window.grad_norm_count else math.nan,
        steps_per_s=_rate(window.timed_steps, seconds),
        tokens_per_s=_rate(window.timed_steps * tokens_per_step, seconds),
        peak_mem_bytes=peak_memory_bytes(device),
        device=name,
    )


