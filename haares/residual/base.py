"""The residual-scheme contract: a scheme owns the loop over sublayers. No scheme lives here."""

from __future__ import annotations

import torch
from torch import nn

from haares.config import ModelConfig


class Residual(nn.Module):
    """How the input to each sublayer is formed from earlier outputs.

    forward(x0, sublayers, rope) -> h, the stream handed to the final norm.
      x0:        token embeddings, (B, T, D)
      sublayers: nn.ModuleList of 2L pre-norm sublayers, attn/mlp alternating;
                 f(h, rope) -> (B, T, D)
      rope:      the model's RoPE module, or a per-pass `SublayerContext` wrapping it when a
                 backbone option needs shared state (value_residual); passed through untouched
    Subclasses own their parameters and initialise them in reset_parameters(generator), which
    `GPT.init_weights` calls after the backbone, with a generator of the scheme's own.
    Routing schemes route only through `haares.residual.router` (route / Router).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_sublayers = 2 * cfg.n_layers

    def forward(self, x0: torch.Tensor, sublayers: nn.ModuleList, rope: nn.Module) -> torch.Tensor:
        raise NotImplementedError

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Initialise the scheme's parameters and buffers; the default scheme has none."""

    def compile_glue(self) -> None:
        """Fast path: torch.compile the scheme's own elementwise work between sublayers, if any.

        Same function, fewer kernels; the default scheme has no glue worth compiling.
        """
