"""U-Net skips over depth (parameter-golf records 001 and 004, docs/golf.md), in the form of the
parameter-golf baseline: the first half of the layers stores its outputs, the mirrored second half
adds them back with learned per-channel weights.
"""

from __future__ import annotations

import torch
from torch import nn

from haares.config import ModelConfig
from haares.residual.base import Residual


class UNet(Residual):
    """PreNorm residual stack whose second half reads the first half's outputs, mirrored.

    L layers, encoder = the first E = floor(L/2), decoder = the remaining L - E; n_skip = E.
      encoder layer l = 0..E-1:   x <- layer_l(x);  push z_l = x
      decoder layer i = 0..L-E-1: if i < E: x <- x + skip_weight[i] * z_{E-1-i}  (pop: mirrored)
                                  x <- layer_{E+i}(x)
    layer_l(x) = x + attn_l(x), then + mlp_l(.): the Standard PreNorm update on one layer.
    skip_weight (E, D) starts at 1 as in the baseline (the record is silent), so at init every
    decoder layer adds its mirror's output once: not an identity, a fixed U-Net.

    L = 4:  z_0 = after layer 0, z_1 = after layer 1; layer 2 reads z_1, layer 3 reads z_0.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.n_layers = cfg.n_layers
        self.n_encoder = cfg.n_layers // 2
        self.skip_weight = nn.Parameter(torch.empty(self.n_encoder, cfg.d_model))  # (E, D)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.skip_weight.fill_(1.0)

    def forward(self, x0: torch.Tensor, sublayers: nn.ModuleList, rope: nn.Module) -> torch.Tensor:
        x = x0  # (B, T, D)
        skips: list[torch.Tensor] = []
        for layer in range(self.n_layers):
            i = layer - self.n_encoder  # position in the decoder (negative in the encoder)
            if 0 <= i < self.n_encoder:
                x = x + self.skip_weight[i] * skips.pop()  # LIFO: decoder i reads encoder E-1-i
            x = x + sublayers[2 * layer](x, rope)  # attention
            x = x + sublayers[2 * layer + 1](x, rope)  # SwiGLU
            if layer < self.n_encoder:
                skips.append(x)
        return x
