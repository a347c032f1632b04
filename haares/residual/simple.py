"""The router-free residual baselines (model-spec.md section 6): Standard, ReZero, LayerScale."""

from __future__ import annotations

import torch
from torch import nn

from haares.config import ModelConfig
from haares.residual.base import Residual


class Standard(Residual):
    """PreNorm residual: x_k = x_{k-1} + f_k(x_{k-1}), x_0 = e."""

    def forward(self, x0: torch.Tensor, sublayers: nn.ModuleList, rope: nn.Module) -> torch.Tensor:
        x = x0  # (B, T, D)
        for f in sublayers:
            x = x + f(x, rope)
        return x


class ReZero(Residual):
    """x_k = x_{k-1} + alpha_k * f_k(x_{k-1}); alpha in R^{2L}, init 0, so the net is the identity at init.

    The PreNorm stays inside f_k (spec A8: every model shares the PreNorm backbone).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.alpha = nn.Parameter(torch.empty(self.n_sublayers))  # (2L,)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.alpha.zero_()

    def forward(self, x0: torch.Tensor, sublayers: nn.ModuleList, rope: nn.Module) -> torch.Tensor:
        x = x0
        for k, f in enumerate(sublayers):
            x = x + self.alpha[k] * f(x, rope)
        return x


class LayerScale(Residual):
    """x_k = x_{k-1} + gamma_k * f_k(x_{k-1}); gamma_k in R^d, init 0.1 / 1e-5 / 1e-6 at 12 / 24 / 48 layers (CaiT)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.init_value = cfg.resolved_layerscale_init
        self.gamma = nn.Parameter(torch.empty(self.n_sublayers, cfg.d_model))  # (2L, D)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.gamma.fill_(self.init_value)

    def forward(self, x0: torch.Tensor, sublayers: nn.ModuleList, rope: nn.Module) -> torch.Tensor:
        x = x0
        for k, f in enumerate(sublayers):
            x = x + self.gamma[k] * f(x, rope)
        return x
