"""Block AttnRes as parameter-golf PR #1696 adapted it (docs/golf.md): each layer routes over
detached snapshots of the stream at block boundaries, with a temperature, and blends the mix into
its input. A different method from the paper's Block AttnRes (block_attnres.py), kept apart.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from haares.config import ModelConfig
from haares.residual.base import Residual
from haares.residual.router import route


class GolfAttnRes(Residual):
    """Standard PreNorm stream plus depth routing over detached block-boundary snapshots.

    The L layers form G = golf_blocks blocks of L/G layers. The bank holds sg(e) and sg(x) at the
    end of every completed block (sg = detach: no gradient flows back through a snapshot).
    Layer l (0-based) in block n:
      bank_l = {sg(e), sg(x_end of block 1), ..., sg(x_end of block n-1)}       |bank| = n
      r_l    = sum_s softmax_s(w_l . RMSNorm(s) / (sqrt(D) T)) s               (w_l init 0)
      h_l    = lerp(x, r_l, m) = x + m (r_l - x)                               (m = golf_blend)
      x     <- x + attn_l(h_l);  x <- x + mlp_l(x)
    T = golf_temperature (1.1), m = 0.25, keys RMS-normalised without a gain. [ASSUMPTION] the blend
    forms the layer's attention input and the stream keeps its identity path (docs/golf.md says why).
    Code names: `query` (L, D) = w_l, `bank` = the snapshots, `key_gain` = a ones buffer.

    G = 2, L = 4:  layers 0, 1 <- {e};  layers 2, 3 <- {e, x after layer 1}
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.n_layers, self.block_layers = cfg.n_layers, cfg.n_layers // cfg.golf_blocks
        self.blend, self.eps = cfg.golf_blend, cfg.norm_eps
        # Temperature and 1/sqrt(D) fold into the query: w . k / (sqrt(D) T) = (w / (sqrt(D) T)) . k
        self.logit_scale = 1.0 / (math.sqrt(cfg.d_model) * cfg.golf_temperature)
        self.query = nn.Parameter(torch.empty(cfg.n_layers, cfg.d_model))  # (L, D)
        self.register_buffer("key_gain", torch.empty(cfg.d_model), persistent=False)  # ones: no gain

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        self.query.zero_()
        self.key_gain.fill_(1.0)

    def forward(self, x0: torch.Tensor, sublayers: nn.ModuleList, rope: nn.Module) -> torch.Tensor:
        x = x0  # (B, T, D)
        bank = [x0.detach()]  # sg(e), then sg(x) at each completed block boundary
        for layer in range(self.n_layers):
            mixed = route(bank, self.query[layer] * self.logit_scale, self.key_gain.to(x.dtype), None, self.eps)
            h = torch.lerp(x, mixed, self.blend)  # x + m (r - x): exactly x when r == x
            x = x + sublayers[2 * layer](h, rope)  # attention reads the blended input
            x = x + sublayers[2 * layer + 1](x, rope)  # SwiGLU
            if (layer + 1) % self.block_layers == 0 and layer + 1 < self.n_layers:
                bank.append(x.detach())
        return x
