"""Depth recurrence (parameter-golf record 003, docs/golf.md): k unique layers run r times, with a
learned loop embedding per effective layer and the Cross-Repeat Skip. The progressive depth
schedule of the record is a training-time change and is not modelled here.
"""

from __future__ import annotations

import torch
from torch import nn

from haares.config import ModelConfig
from haares.residual.base import Residual


class Recurrent(Residual):
    """Weight-shared PreNorm stack: the k = n_layers unique layers are applied r = repeats times.

    Effective layer (r, j), r = 0..R-1 pass, j = 0..k-1 unique layer, index l = r k + j:
      x <- x + loop_embed[l]                                   (depth-wise position, init 0)
      x <- x + cross_skip[r-1, j] * z_{r-1, j}   if r >= 1      (Cross-Repeat Skip, init 0)
      x <- x + attn_j(x);  x <- x + mlp_j(x);  z_{r, j} = x    (the layer's output this pass)
    z_{r-1, j} is the stream right after the same unique layer in the previous pass; the record
    calls it "a weighted residual from each block's previous repeat output". With both inits at 0
    the scheme starts as the plain weight-shared loop, x_0 = e.
    Code names: `loop_embed` (R k, D), `cross_skip` (R-1, k), `previous[j]` = z_{r-1, j}.

    Order of sublayers, k = 2, R = 2:  attn_0 mlp_0 attn_1 mlp_1 | attn_0 mlp_0 attn_1 mlp_1
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.n_unique, self.repeats = cfg.n_layers, cfg.repeats
        self.loop_embed = nn.Parameter(torch.empty(self.repeats * self.n_unique, cfg.d_model))  # (R k, D)
        self.cross_skip = nn.Parameter(torch.empty(self.repeats - 1, self.n_unique))  # (R-1, k)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.loop_embed.zero_()
        self.cross_skip.zero_()

    def forward(self, x0: torch.Tensor, sublayers: nn.ModuleList, rope: nn.Module) -> torch.Tensor:
        x = x0  # (B, T, D)
        previous: list[torch.Tensor] = []  # z_{r-1, j}: one per unique layer, from the last pass
        for r in range(self.repeats):
            outputs = []
            for j in range(self.n_unique):
                x = x + self.loop_embed[r * self.n_unique + j]
                if r > 0:
                    x = x + self.cross_skip[r - 1, j] * previous[j]
                x = x + sublayers[2 * j](x, rope)  # attention
                x = x + sublayers[2 * j + 1](x, rope)  # SwiGLU
                outputs.append(x)
            previous = outputs
        return x
