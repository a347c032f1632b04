"""The reference router: softmax over sources of a query against RMS-normed keys, per token.

`route` is the one routing function every scheme calls (through `Router`), so that a fused kernel
can replace it without touching any scheme. It is written for clarity, not speed.
Also owns the source-count instrumentation (`record_sources`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import get_args

import torch
from torch import nn

from haares.config import RouterImplName


def route(
    values: torch.Tensor | Sequence[torch.Tensor],
    query: torch.Tensor,
    key_gain: torch.Tensor,
    biases: torch.Tensor | None,
    eps: float,
    details: Sequence = (),
) -> torch.Tensor:
    """Route over M sources: h = sum_v softmax_v(w . RMSNorm_rho(v) + beta_v) * v.

    values:   (M, B, T, D) tensor or a list of M tensors (B, T, D); the raw sources
    query:    (D,) pseudo-query w
    key_gain: (D,) key-norm gain rho
    biases:   (M,) per-source logit bias, a longer table whose first M entries are these, or None for all zero
    eps:      key-norm eps (the backbone RMSNorm eps)
    details:  `haares.residual.haares.Detail` recipes of sources the fused router rebuilds instead of saving; the
              reference ignores them (autograd saves its own stack of the sources)
    returns   (B, T, D): the weighted sum of the RAW values (keys are normalised, values are not)
    """
    V = values if isinstance(values, torch.Tensor) else torch.stack(list(values), 0)  # (M, B, T, D)
    keys = V * torch.rsqrt(V.pow(2).mean(-1, keepdim=True) + eps) * key_gain  # (M, B, T, D)
    logits = keys @ query  # (M, B, T); no temperature, no 1/sqrt(d) (spec A9)
    if biases is not None:
        logits = logits + biases[: V.shape[0]].view(-1, 1, 1)
    alpha = logits.softmax(0)  # per token, over the source axis
    return (alpha.unsqueeze(-1) * V).sum(0)  # (B, T, D)


@dataclass
class SourceRecord:
    """Source counts seen by routers during a forward pass, in call order."""

    sublayer: list[int] = field(default_factory=list)
    """One count per sublayer router (2L per forward)."""
    readout: list[int] = field(default_factory=list)
    """One count per final readout router call."""


class Router(nn.Module):
    """One router's parameters: pseudo-query w (init 0, uniform routing) and key-norm gain (init 1)."""

    def __init__(self, d_model: int, *, eps: float, readout: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.readout = readout
        self.w = nn.Parameter(torch.empty(d_model))
        self.gain = nn.Parameter(torch.empty(d_model))
        self.recorder: SourceRecord | None = None  # set only inside record_sources()
        self.route_fn = route  # swapped by use_router(); same function, other implementation

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.w.zero_()
        self.gain.fill_(1.0)

    def forward(
        self, values: torch.Tensor | Sequence[torch.Tensor], biases: torch.Tensor | None = None, details: Sequence = ()
    ) -> torch.Tensor:
        """values: M sources (B, T, D); biases: (M,), a longer table (see `route`) or None; details: recipes
        (see `route`) -> (B, T, D)."""
        if self.recorder is not None:
            (self.recorder.readout if self.readout else self.recorder.sublayer).append(len(values))
        return self.route_fn(values, self.w, self.gain, biases, self.eps, details)


# The config's names less "auto", which resolve_fast_path turns into one of these.
ROUTER_IMPLS = tuple(name for name in get_args(RouterImplName) if name != "auto")


def use_router(model: nn.Module, name: str, *, compiled: bool = False) -> None:
    """Make every Router in `model` route with implementation `name`: 'reference', 'fused' (the fused
    router's bodies from Inductor) or 'triton' (its bodies as hand-written Triton kernels, Inductor's
    where the kernels do not apply; CUDA only) or 'triton_virtual' (the kernels, HAARES's details never
    materialised: `FusedRoute.rebuilds_details`).

    `compiled` (fused and triton) gives the model one FusedRoute with torch.compile'd bodies, shared
    by its routers: the CUDA fast path.
    """
    if name not in ROUTER_IMPLS:
        raise ValueError(f"unknown router implementation {name!r}; known: {sorted(ROUTER_IMPLS)}")
    if name != "reference":
        from haares.residual.fused_router import FusedRoute

        impl = FusedRoute(compiled=compiled, triton=name.startswith("triton"), virtual_details=name == "triton_virtual")
    else:
        impl = route
    for module in model.modules():
        if isinstance(module, Router):
            module.route_fn = impl


@contextmanager
def record_sources(model: nn.Module) -> Iterator[SourceRecord]:
    """Within the block, every Router in `model` appends its source count to the yielded record."""
    record = SourceRecord()
    routers = [m for m in model.modules() if isinstance(m, Router)]
    for router in routers:
        router.recorder = record
    try:
        yield record
    finally:
        for router in routers:
            router.recorder = None
