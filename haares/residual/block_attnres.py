"""Block Attention Residuals (model-spec.md section 3): routing over the embedding and block sums."""

from __future__ import annotations

import torch
from torch import nn

from haares.config import ModelConfig
from haares.residual.base import Residual
from haares.residual.router import Router


class BlockAttnRes(Residual):
    """Block AttnRes: each sublayer reads a learned softmax mix of the embedding and block sums.

    The 2L sublayers are cut into N blocks of S = 2L/N; sublayer k = (n-1)S + i (block n, position i).
      Eq. 1   y_{n,i} = F_{n,i}(h_{n,i})                      (F owns its PreNorm)
      Eq. 2   b_n = sum_{i=1..S} y_{n,i};  partial b_n^(i) = sum_{j<i} y_{n,j}
      sources S_{n,i} = {e} + {b_1..b_{n-1}} + {b_n^(i) if i >= 2}        |S| = n + [i >= 2]
      route   h_{n,i} = sum_v softmax_v(w_k . RMSNorm_{rho_k}(v)) v      (router k, w_k init 0)
      Eq. 11  h_out = route_out({e, b_1..b_N})
    Code names: `done` = [e, b_1, ..., b_{n-1}], `b` = partial b_n^(i), `routers[k]`, `readout`.

    Sources per sublayer, N = 2, S = 2 (e = embedding):
        block 1:  attn_1 <- e            mlp_1 <- e, b_1^(2)
        block 2:  attn_2 <- e, b_1       mlp_2 <- e, b_1, b_2^(2)
        readout   <- e, b_1, b_2
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.blocks, self.block_size = cfg.blocks, cfg.sublayers_per_block
        self.routers = nn.ModuleList(Router(cfg.d_model, eps=cfg.norm_eps) for _ in range(self.n_sublayers))
        self.readout = Router(cfg.d_model, eps=cfg.norm_eps, readout=True)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        for router in [*self.routers, self.readout]:
            router.reset_parameters()

    def forward(self, x0: torch.Tensor, sublayers: nn.ModuleList, rope: nn.Module) -> torch.Tensor:
        done = [x0]  # e, then each completed block sum b_n; all (B, T, D)
        k = 0
        for _n in range(self.blocks):
            b = None  # partial b_n^(i); None at i = 1 (no empty partial source)
            for _i in range(self.block_size):
                h = self.routers[k](done if b is None else [*done, b])
                y = sublayers[k](h, rope)
                # Eq. 2, online; block sums accumulate in fp32 at least (bf16 sublayer outputs under
                # autocast would otherwise be summed in bf16, unlike Standard's fp32 residual stream).
                b = y.to(torch.promote_types(y.dtype, torch.float32)) if b is None else b + y
                k += 1
            done.append(b)
        return self.readout(done)  # Eq. 11 over {e, b_1..b_N}
