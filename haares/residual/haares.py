"""HAARES (model-spec.md section 4): Block AttnRes plus one RMS-matched signed detail source per block.

Its ablations (Dup. b, random-sign detail, fixed detail bias, no RMS matching, block count) are
config values read here, not copies of the code.
"""

from __future__ import annotations

import torch
from torch import nn

from haares.config import ModelConfig
from haares.residual.base import Residual
from haares.residual.router import Router


def rms(z: torch.Tensor) -> torch.Tensor:
    """Per-token RMS over the hidden dim: (..., D) -> (..., 1)."""
    return z.pow(2).mean(-1, keepdim=True).sqrt()


def rms_match(d: torch.Tensor, b: torch.Tensor, *, eps: float, max_scale: float) -> torch.Tensor:
    """Eq. 7: d_hat = d * sg(min(rms(b) / (rms(d) + eps), max_scale)), per token; (B, T, D) -> (B, T, D).

    The stop-gradient covers the whole factor, so gradient reaches d only through the product.
    """
    scale = (rms(b) / (rms(d) + eps)).clamp(max=max_scale)  # (B, T, 1)
    return d * scale.detach()


def half_split_signs(blocks: int, block_size: int) -> torch.Tensor:
    """Eq. 3 sign pattern, (N, S): +1 for the first S/2 positions of a block, -1 for the rest (A12: floor)."""
    signs = torch.ones(blocks, block_size)
    signs[:, block_size // 2 :] = -1.0
    return signs


def random_signs(blocks: int, block_size: int, *, seed: int) -> torch.Tensor:
    """Fixed i.i.d. Rademacher signs, (N, S), drawn once from `seed` (spec A6)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, 2, (blocks, block_size), generator=gen).float() * 2.0 - 1.0


def next_sources(
    b: torch.Tensor | None,
    d: torch.Tensor | None,
    y: torch.Tensor,
    sign: torch.Tensor,
    *,
    detail: str,
    rms_on: bool,
    eps: float,
    max_scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """After sublayer output y (B, T, D): Eq. 6, then the detail slot's source. Returns (b, d, d_hat).

    b, d: partials b_n^(i), d_n^(i) before y, or None at the block's first position; sign: () tensor.
    The partials accumulate in fp32 at least: under bf16 autocast y is bf16, and summing 2L/N of
    them in bf16 would lose what Standard's fp32 residual stream keeps. d_hat is the source in the
    detail slot: RMS-matched d (Eq. 7), raw d (w/o RMS matching) or a copy of b (Dup. b).
    One pure function so the fast path can compile it into one kernel forward and one backward.
    """
    y = y.to(torch.promote_types(y.dtype, torch.float32))
    b = y if b is None else b + y
    d = sign * y if d is None else d + sign * y
    if detail == "dup_cumulative":
        return b, d, b  # "Dup. b": a second copy of the cumulative source
    if not rms_on:
        return b, d, d  # "w/o RMS matching"
    return b, d, rms_match(d, b, eps=eps, max_scale=max_scale)


class Haares(Residual):
    """HAARES: route over the embedding, block sums b and RMS-matched half-split details d_hat.

    Block n, position i, k = (n-1)S + i, sigma_i = +1 (i <= S/2) or -1 (i > S/2):
      Eq. 1   y_{n,i} = F_{n,i}(h_{n,i})
      Eq. 2   b_n = sum_i y_{n,i}             Eq. 3  d_n = sum_i sigma_i y_{n,i}
      Eq. 4-6 partials b_n^(i) = sum_{j<i} y_{n,j}, d_n^(i) = sum_{j<i} sigma_j y_{n,j}, updated online
      Eq. 7   d_hat = d * sg(min(rms(b) / (rms(d) + eps), s_max))   (each d with its own b)
      Eq. 8   S_{n,i} = {e} + {b_m, d_hat_m : m < n} + {b_n^(i), d_hat_n^(i) if i >= 2}
              |S| = 2n - 1 + 2[i >= 2]
      Eq. 9   logit_v = w_k . RMSNorm_{rho_k}(v) + beta_v; beta = 0 for e and b, beta_m for d_hat_m
      Eq. 10  h_{n,i} = sum_v softmax_v(logit_v) v
      Eq. 11  h_out = route_out({e, b_1..b_N})   (no details, no bias)
    Code names: `vals`/`bias` = completed sources and their biases, `b`/`d` = partials,
    `beta` (N,) = learned parameter or fixed buffer, `signs` (N, S) buffer.
    Ablations (config): detail = half_split | random_sign (signs from sign_seed) | dup_cumulative
    (the detail slot holds a copy of b, keeping beta); detail_bias = "learned" | a fixed number;
    rms_match = False gives d_hat = d.

    Sources per sublayer, N = 2, S = 2 (e = embedding, ^ = RMS-matched):
        block 1:  attn_1 <- e                      mlp_1 <- e, b_1^(2), d^_1^(2)
        block 2:  attn_2 <- e, b_1, d^_1           mlp_2 <- e, b_1, d^_1, b_2^(2), d^_2^(2)
        readout   <- e, b_1, b_2
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.blocks, self.block_size = cfg.blocks, cfg.sublayers_per_block
        self.detail, self.sign_seed = cfg.detail, cfg.sign_seed
        self.rms_on, self.rms_eps, self.rms_max_scale = cfg.rms_match, cfg.rms_eps, cfg.rms_max_scale
        self.routers = nn.ModuleList(Router(cfg.d_model, eps=cfg.norm_eps) for _ in range(self.n_sublayers))
        self.readout = Router(cfg.d_model, eps=cfg.norm_eps, readout=True)
        self.learned_bias = cfg.detail_bias == "learned"
        self.bias_init = cfg.detail_bias_init if self.learned_bias else float(cfg.detail_bias)
        if self.learned_bias:
            self.beta = nn.Parameter(torch.empty(self.blocks))  # (N,), shared by all routers (A5)
        else:
            self.register_buffer("beta", torch.empty(self.blocks))  # fixed-bias ablation, not learned
        self.register_buffer("signs", torch.empty(self.blocks, self.block_size))  # (N, S)
        self.next_sources = next_sources  # compile_glue() swaps in a compiled copy (same function)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        for router in [*self.routers, self.readout]:
            router.reset_parameters()
        self.beta.fill_(self.bias_init)
        if self.detail == "random_sign":
            self.signs.copy_(random_signs(self.blocks, self.block_size, seed=self.sign_seed))
        else:
            self.signs.copy_(half_split_signs(self.blocks, self.block_size))

    def compile_glue(self) -> None:
        """Fast path: the partial updates and RMS matching of each sublayer as one compiled function."""
        from haares.residual.compiled import CompiledFn

        self.next_sources = CompiledFn(next_sources)

    def forward(self, x0: torch.Tensor, sublayers: nn.ModuleList, rope: nn.Module) -> torch.Tensor:
        zero = x0.new_zeros(())
        beta = self.beta.to(x0.dtype)  # (N,)
        vals, bias = [x0], [zero]  # completed sources (B, T, D) and their logit biases (scalars)
        cum = [x0]  # readout sources: e, b_1..b_N
        k = 0
        for n in range(self.blocks):
            b = d = d_hat = None  # partial b_n^(i), d_n^(i) and the detail slot's source; None at i = 1
            for i in range(self.block_size):
                if b is None:
                    h = self.routers[k](vals, torch.stack(bias))
                else:
                    h = self.routers[k]([*vals, b, d_hat], torch.stack([*bias, zero, beta[n]]))
                y = sublayers[k](h, rope)
                # The partial detail depends on the current prefix, so it is rebuilt after every sublayer;
                # after the last one it is the completed d_hat_n, computed once and reused below.
                b, d, d_hat = self.next_sources(
                    b, d, y, self.signs[n, i],
                    detail=self.detail, rms_on=self.rms_on, eps=self.rms_eps, max_scale=self.rms_max_scale,
                )
                k += 1
            vals += [b, d_hat]
            bias += [zero, beta[n]]
            cum.append(b)
        return self.readout(cum)  # Eq. 11: cumulative sources only
