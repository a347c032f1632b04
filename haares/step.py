"""One training step (forward, backward, gradient clipping, optimizer step), eager or as a CUDA graph.

The trainer and `haares bench` both step through `TrainStep`, so the bench times what workers train.
Why a whole-step graph: at bf16 a 48-layer model is bound by the host launching kernels (about 30
per sublayer, forward and backward, 96 sublayers); replaying one captured graph removes that. Graphs
per sublayer cannot work here, because routing keeps every sublayer's output alive as a source while
a per-sublayer graph reuses one static output buffer; a graph of the whole step has no such problem.
"""

from __future__ import annotations

import torch
from torch import nn

from haares.fastpath import autocast

# Eager steps before the capture: compilation, lazy CUDA/cuBLAS initialisation and the optimizer's
# state all happen here, never during capture.
GRAPH_WARMUP_STEPS = 3


class TrainStep:
    """Callable training step; every call is a real optimizer step on the batch it is given.

    __call__(tokens) -> (loss, grad_norm)
      tokens:    (B, T+1) int64 on the model's device; inputs are tokens[:, :-1], targets tokens[:, 1:]
      loss:      0-d detached device tensor, mean cross-entropy (nats); not synchronised
      grad_norm: 0-d detached device tensor, global L2 norm of the gradients before clipping

    With `cuda_graph`, the first GRAPH_WARMUP_STEPS calls run eagerly on a side stream, the next call
    captures the whole step into one CUDA graph (static token buffer; the optimizer must be built with
    capturable=True) and replays it, and every later call copies its tokens into the static buffer
    and replays. Parameters, gradients and optimizer state are the same tensors throughout, so a
    checkpoint restored *before* the first call is what the graph trains (restoring later would
    replace tensors the graph holds; the trainer restores first).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        grad_clip: float,
        precision: str,
        cuda_graph: bool = False,
        compiled: bool = False,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.grad_clip, self.precision = grad_clip, precision
        self.cuda_graph = cuda_graph
        self.calls = 0
        # Calls that compile or capture, which the trainer times apart from training.
        self.untimed_calls = GRAPH_WARMUP_STEPS + 1 if cuda_graph else int(compiled)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_tokens: torch.Tensor | None = None
        self.static_out: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def warming_up(self) -> bool:
        """True while the next call compiles or captures (its time is warm-up, not training)."""
        return self.calls < self.untimed_calls

    def __call__(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        if not self.cuda_graph:
            return self._step(tokens)
        if self.graph is None:
            if self.calls <= GRAPH_WARMUP_STEPS:
                return self._on_side_stream(tokens)
            self._capture(tokens)
        else:
            self.static_tokens.copy_(tokens, non_blocking=True)
        self.graph.replay()
        loss, grad_norm = self.static_out
        # The graph overwrites its outputs at the next replay; callers may hold these for a while.
        return loss.clone(), grad_norm.clone()

    def _step(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T) each
        with autocast(self.precision, tokens.device, cuda_graph=self.cuda_graph):
            _, loss = self.model(inputs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        return loss.detach(), grad_norm.detach()

    def _on_side_stream(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # PyTorch's capture recipe: warm up on a side stream so that lazily created per-stream
        # state (cuBLAS workspaces, autocast) never lands in the capture.
        side = torch.cuda.Stream(tokens.device)
        side.wait_stream(torch.cuda.current_stream(tokens.device))
        with torch.cuda.stream(side):
            out = self._step(tokens)
        torch.cuda.current_stream(tokens.device).wait_stream(side)
        return out

    def _capture(self, tokens: torch.Tensor) -> None:
        self.static_tokens = tokens.clone()
        # Gradients are None when capture starts, so backward *writes* them inside the graph (from
        # its private pool) instead of accumulating: every replay overwrites them in place.
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = self._step(self.static_tokens)
