"""Muon (momentum, then a Newton-Schulz orthogonalised update) for 2-D weight matrices, and the
optimizer that steps Muon and AdamW together. Which parameter goes where is train.param_groups'.

Muon as in modded-nanogpt and the parameter-golf records (docs/golf.md): Nesterov momentum 0.95,
five quintic Newton-Schulz iterations, the update scaled by sqrt(max(1, rows / cols)).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

# Quintic Newton-Schulz coefficients (a, b, c) of modded-nanogpt: chosen so that the map
# s -> a s + b s^3 + c s^5 pushes every singular value in (0, 1] quickly towards ~1 (not exactly 1:
# the iteration trades exactness for speed; singular values end up roughly in [0.7, 1.2]).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalise(grad: torch.Tensor, *, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T for grad = U S V^T, (rows, cols) -> (rows, cols), in float32.

    Scaled to Frobenius norm 1 first, so every singular value is <= 1, then `steps` iterations of
    X <- a X + (b A + c A^2) X with A = X X^T, run on the wide orientation (rows <= cols) so that A
    is the smaller Gram matrix.
    """
    if grad.ndim != 2:
        raise ValueError(f"Muon orthogonalises 2-D matrices; got shape {tuple(grad.shape)}")
    a, b, c = NS_COEFFICIENTS
    x = grad.float()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (x.norm() + eps)
    for _ in range(steps):
        gram = x @ x.T  # (rows, rows) of the wide orientation
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalised per matrix.

    Per parameter W (rows, cols) with gradient G and momentum buffer M:
      M <- mu M + G;  U = G + mu M (Nesterov);  O = orthogonalise(U) sqrt(max(1, rows / cols))
      W <- W (1 - lr wd) - lr O
    weight_decay is decoupled (AdamW-style), scaled by lr.
    """

    def __init__(
        self, params: Iterable[Any], *, lr: float, momentum: float, ns_steps: int, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, ns_steps=ns_steps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        if closure is not None:
            raise ValueError("Muon.step takes no closure")
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.mul_(mu).add_(p.grad)
                update = orthogonalise(p.grad.add(buf, alpha=mu), steps=group["ns_steps"])
                update *= max(1.0, p.shape[0] / p.shape[1]) ** 0.5
                if wd:
                    p.mul_(1.0 - lr * wd)
                p.add_(update.to(p.dtype), alpha=-lr)


class MuonWithAdamW:
    """Muon over some parameters and AdamW over the rest, stepped as one optimizer.

    Exposes what the training loop and checkpoints use: step, zero_grad, state_dict,
    load_state_dict and param_groups (AdamW's groups, then Muon's). The state dict nests the two.
    """

    def __init__(self, muon: Muon, adamw: torch.optim.AdamW) -> None:
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [*self.adamw.param_groups, *self.muon.param_groups]

    def step(self) -> None:
        self.adamw.step()
        self.muon.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adamw.load_state_dict(state["adamw"])
        self.muon.load_state_dict(state["muon"])
