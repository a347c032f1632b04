"""HAARES (model-spec.md section 4): Block AttnRes plus one RMS-matched signed detail source per block.

Its ablations (Dup. b, random-sign detail, fixed detail bias, no RMS matching, block count) are
config values read here, not copies of the code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from haares.config import ModelConfig
from haares.residual.base import Residual
from haares.residual.recipes import rms_scale
from haares.residual.router import Router


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
    b_half: torch.Tensor | None,
    detail: str,
    rms_on: bool,
    eps: float,
    max_scale: float,
    materialize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """After sublayer output y (B, T, D): Eq. 6, then the detail slot's source. Returns (b, d, d_hat, scale).

    b, d: partials b_n^(i), d_n^(i) before y, or None at the block's first position; sign: () tensor.
    The partials accumulate in fp32 at least: under bf16 autocast y is bf16, and summing 2L/N of
    them in bf16 would lose what Standard's fp32 residual stream keeps.
    Half-split signs need no running d: d^(i) = b^(i) up to the sign flip and 2 b^(h) - b^(i) after
    it, with b_half = b^(h) the partial at the flip (None before it). That is what lets the fused
    router rebuild a detail source from b partials in backward instead of saving it (`Detail`); here
    d is then returned as None. Other signs (random_sign) keep the running sum.
    d_hat is the source in the detail slot: RMS-matched d (Eq. 7; scale (B, T, 1) is its detached
    factor), raw d (w/o RMS matching; scale None) or a copy of b (Dup. b; scale None).
    materialize=False (half-split signs only) returns d_hat and scale as None: for a router that
    rebuilds the detail from its recipe in both directions and sends its gradient to b and b^(h)
    itself (`FusedRoute.rebuilds_details`), nothing reads d_hat, so it is not written, and the first
    router to read the detail computes its factor in the pass that rebuilds it (`Detail.fill`), so
    this pass neither reads b^(h) nor reduces over rows: it is Block AttnRes's b + y.
    One pure function so the fast path can compile it into one kernel forward and one backward.
    """
    y = y.to(torch.promote_types(y.dtype, torch.float32))
    b = y if b is None else b + y
    if detail == "half_split":
        d_now = b if b_half is None else 2 * b_half - b
        d = None
    else:
        d_now = d = sign * y if d is None else d + sign * y
    if detail == "dup_cumulative":
        return b, d, b, None  # "Dup. b": a second copy of the cumulative source
    if not materialize:
        return b, d, None, None
    if not rms_on:
        return b, d, d_now, None  # "w/o RMS matching"
    scale = rms_scale(d_now, b, eps=eps, max_scale=max_scale)
    return b, d, d_now * scale, scale


@dataclass(frozen=True)
class Detail:
    """How a router can rebuild a half-split detail source from b partials instead of saving it.

    source = (base if half is None else 2 * half - base) * scale, bit for bit what `next_sources`
    computed; base is the router source at index `base` (the same block's b or b^(i)), half
    (B, T, D) is b^(h) (itself a source of an earlier router, so saved anyway), scale (B, T, 1) or
    None. Each detail saved this way frees one (B, T, D) fp32 tensor until backward.
    fill = (eps, max_scale): scale is an unwritten buffer that the router reading this recipe first
    fills with Eq. 7's factor of the rebuilt detail and its base (`rms_scale`), before using it;
    later routers get the recipe without `fill` (`filled`). None: scale is already computed.
    """

    slot: int
    base: int
    half: torch.Tensor | None
    scale: torch.Tensor | None
    fill: tuple[float, float] | None = None

    def filled(self) -> Detail:
        """This recipe once a router has filled its scale."""
        return self if self.fill is None else replace(self, fill=None)


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
    Code names: `vals` = completed sources, `bias_table` = their biases (a prefix per router), `b`/`d` = partials,
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
        # Every router's biases are a prefix of one table, (2N + 1,): source m = 2j (j >= 1), d_hat_j, has
        # beta_j, the others 0. One table a step, not a stack of scalars per router: the fused router
        # keeps one running gradient sum for it, so backward adds no small kernels per router.
        bias_table = torch.stack([zero, *(x for beta_n in self.beta.to(x0.dtype).unbind(0) for x in (zero, beta_n))])
        vals = [x0]  # completed sources (B, T, D); their biases are bias_table[: len(vals)]
        cum = [x0]  # readout sources: e, b_1..b_N
        lean = self.detail == "half_split"  # detail sources a router can rebuild from b partials
        # A router that rebuilds them in both directions (the Triton kernels) gets no detail tensor at all.
        virtual = lean and getattr(self.routers[0].route_fn, "rebuilds_details", False)
        # ... and computes each detail's RMS factor itself, in the first router that rebuilds it (Detail.fill).
        fill = (self.rms_eps, self.rms_max_scale) if virtual and self.rms_on else None
        details: list[Detail] = []  # recipes of the completed details in `vals`
        k = 0
        for n in range(self.blocks):
            b = d = d_hat = b_half = None  # partials b_n^(i), d_n^(i), detail slot, b^(h); None at i = 1
            made_from: tuple = (None, None, None)  # (b_half, scale, fill) that d_hat was built with
            for i in range(self.block_size):
                if b is None:
                    h = self.routers[k](vals, bias_table, details)
                else:
                    partial = [Detail(len(vals) + 1, len(vals), *made_from)] if lean else []
                    h = self.routers[k]([*vals, b, d_hat], bias_table, [*details, *partial])
                details = [dt.filled() for dt in details]
                y = sublayers[k](h, rope)
                # The partial detail depends on the current prefix, so it is rebuilt after every sublayer;
                # after the last one it is the completed d_hat_n, computed once and reused below.
                b, d, d_hat, scale = self.next_sources(
                    b, d, y, self.signs[n, i], b_half=b_half,
                    detail=self.detail, rms_on=self.rms_on, eps=self.rms_eps, max_scale=self.rms_max_scale,
                    materialize=not virtual,
                )
                if fill is not None:  # filled by the router that reads it first (B, T, 1)
                    scale = b.new_empty(*b.shape[:-1], 1)
                made_from = (b_half, scale, fill)
                if lean and i + 1 == self.block_size // 2:
                    b_half = b  # b^(h): the signs flip after this position (Eq. 3, A12)
                k += 1
            if lean:
                details.append(Detail(len(vals) + 1, len(vals), *made_from))
            vals += [b, d_hat]
            cum.append(b)
        return self.readout(cum)  # Eq. 11: cumulative sources only
