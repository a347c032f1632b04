"""Muon (momentum, then a Newton-Schulz orthogonalised update) for 2-D weight matrices, and the
optimizer that steps Muon and AdamW together, and the trainer's optimizer itself: AdamW groups by role
(`param_groups`) and `make_optimizer`, which hands the Linear weights to Muon when asked.

Muon as in modded-nanogpt and the parameter-golf records (docs/golf.md): Nesterov momentum 0.95,
five quintic Newton-Schulz iterations, the update scaled by sqrt(max(1, rows / cols)).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from haares.config import TrainConfig

# Quintic Newton-Schulz coefficients (a, b, c) of modded-nanogpt: chosen so that the map
# s -> a s + b s^3 + c s^5 pushes every singular value in (0, 1] quickly towards ~1 (not exactly 1:
# the iteration trades exactness for speed; singular values end up roughly in [0.7, 1.2]).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalise(grad: torch.Tensor, *, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T for grad = U S V^T, per matrix: (..., rows, cols) -> same shape, float32.

    Each matrix is scaled to Frobenius norm 1 first, so every singular value is <= 1, then `steps`
    iterations of X <- a X + (b A + c A^2) X with A = X X^T, run on the wide orientation (rows <= cols)
    so that A is the smaller Gram matrix. A leading batch of same-shaped matrices runs as one batched
    matmul per product (what Muon.step does), so the iteration costs the same few kernels for 240
    matrices as for one.
    """
    if grad.ndim < 2:
        raise ValueError(f"Muon orthogonalises 2-D matrices (or a batch of them); got shape {tuple(grad.shape)}")
    a, b, c = NS_COEFFICIENTS
    x = grad.float()
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)
    for _ in range(steps):
        gram = x @ x.mT  # (..., rows, rows) of the wide orientation
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


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
            # One stack per shape: a 48-layer model has 240 matrices but four shapes, and per-matrix
            # Newton-Schulz is some 3,600 small matmuls a step, launch-bound on a GPU (golf: 10x slower steps).
            for params in _same_shape([p for p in group["params"] if p.grad is not None]):
                grads = [p.grad for p in params]
                bufs = [self._momentum_buffer(p) for p in params]
                torch._foreach_mul_(bufs, mu)
                torch._foreach_add_(bufs, grads)
                nesterov = torch.stack(torch._foreach_add(grads, bufs, alpha=mu))  # (k, rows, cols)
                rows, cols = params[0].shape
                update = orthogonalise(nesterov, steps=group["ns_steps"]) * max(1.0, rows / cols) ** 0.5
                if wd:
                    torch._foreach_mul_(params, 1.0 - lr * wd)
                torch._foreach_add_(params, list(update.to(params[0].dtype).unbind(0)), alpha=-lr)

    def _momentum_buffer(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad)
        return state["momentum_buffer"]


def _same_shape(params: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """`params` split into lists sharing shape, dtype and device, in first-seen order."""
    groups: dict[tuple[Any, ...], list[torch.Tensor]] = {}
    for p in params:
        groups.setdefault((tuple(p.shape), p.dtype, p.device), []).append(p)
    return list(groups.values())


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


# --- the trainer's optimizer ---------------------------------------------------------------------


def param_groups(model: nn.Module, train_cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups by role (never by ndim), each parameter in exactly one group.

    | group     | members                                           | weight decay          |
    | linear    | weight of every nn.Linear outside model.residual  | train_cfg.weight_decay |
    | embedding | model.embed.weight (tied with the output head)    | train_cfg.weight_decay |
    | residual  | every parameter of model.residual (routers, gains, detail biases, scales) | 0 |
    | other     | the rest: RMSNorm gains                           | 0                     |

    Empty groups are left out. Each group carries a "name" key.
    """
    residual = getattr(model, "residual", None)
    residual_ids = {id(p) for p in residual.parameters()} if residual is not None else set()
    linear_ids = {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, nn.Linear) and id(module.weight) not in residual_ids
    }
    embed_id = id(model.embed.weight)
    groups: dict[str, list[nn.Parameter]] = {"linear": [], "embedding": [], "residual": [], "other": []}
    # named_parameters() yields a tied parameter once, so the shared head/embedding is not doubled.
    for _name, param in model.named_parameters():
        if id(param) in residual_ids:
            groups["residual"].append(param)
        elif id(param) == embed_id:
            groups["embedding"].append(param)
        elif id(param) in linear_ids:
            groups["linear"].append(param)
        else:
            groups["other"].append(param)
    decay = {"linear": train_cfg.weight_decay, "embedding": train_cfg.weight_decay}
    return [
        {"name": name, "params": params, "weight_decay": decay.get(name, 0.0)}
        for name, params in groups.items()
        if params
    ]


def make_optimizer(
    model: nn.Module, train_cfg: TrainConfig, device: torch.device, *, capturable: bool = False
) -> torch.optim.AdamW | MuonWithAdamW:
    """AdamW over `param_groups`, constant lr, fused on CUDA; `capturable` for a CUDA-graph step.

    With train_cfg.optimizer == "muon", the "linear" group (the 2-D backbone Linear weights, chosen
    by role) goes to Muon (muon_lr, muon_momentum, muon_ns_steps, decay weight_decay) and the other
    groups (embedding/head, norms, scheme parameters) stay on this same AdamW.
    """
    groups = param_groups(model, train_cfg)
    muon_groups = [g for g in groups if g["name"] == "linear"] if train_cfg.optimizer == "muon" else []
    adamw = torch.optim.AdamW(
        [g for g in groups if g not in muon_groups],
        lr=train_cfg.lr,
        betas=(train_cfg.beta1, train_cfg.beta2),
        eps=train_cfg.adam_eps,
        fused=device.type == "cuda",
        capturable=capturable,
    )
    if train_cfg.optimizer != "muon":
        return adamw
    muon = Muon(muon_groups, lr=train_cfg.muon_lr, momentum=train_cfg.muon_momentum,
                ns_steps=train_cfg.muon_ns_steps, weight_decay=train_cfg.weight_decay)
    return MuonWithAdamW(muon, adamw)
