"""The PreNorm decoder backbone: RMSNorm, RoPE, Attention, SwiGLU, GPT and its paired initialisation.

The residual scheme (how each sublayer's input is formed) lives in `haares.residual`; this file only
knows that `GPT.residual(x0, sublayers, rope)` returns the stream handed to the final norm.
No dropout, no biases (model-spec.md section 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from haares.config import ModelConfig
from haares.residual import Residual, build_residual

# Offset between the backbone generator and the scheme generator of one seed: the two streams of
# random numbers must not overlap, so schemes never perturb the backbone draws (paired init).
SCHEME_SEED_OFFSET = 1_000_003


class RMSNorm(nn.Module):
    """Affine RMSNorm over the last dim: g * x / sqrt(mean(x^2) + eps); g init 1."""

    def __init__(self, d_model: int, *, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., D) -> (..., D)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class RoPE(nn.Module):
    """Rotary position embedding (rotate-half form) from a table of `max_len` positions.

    Applied to q and k of shape (B, H, T, Dh); Dh must be even. The cos/sin tables, (max_len, Dh/2),
    are non-persistent buffers rebuilt by `reset_parameters()` (they follow from the config).
    """

    def __init__(self, head_dim: int, *, max_len: int, base: float) -> None:
        super().__init__()
        self.head_dim, self.max_len, self.base = head_dim, max_len, base
        self.register_buffer("cos", torch.empty(max_len, head_dim // 2), persistent=False)
        self.register_buffer("sin", torch.empty(max_len, head_dim // 2), persistent=False)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        inv_freq = self.base ** (-torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim)
        angles = torch.outer(torch.arange(self.max_len, dtype=torch.float64), inv_freq)  # (max_len, Dh/2)
        self.cos.copy_(angles.cos())
        self.sin.copy_(angles.sin())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, H, T, Dh) -> (B, H, T, Dh)
        T = x.shape[-2]
        if T > self.max_len:
            raise ValueError(f"sequence length {T} exceeds the RoPE table (model.rope_max_len={self.max_len})")
        cos, sin = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)  # (T, Dh/2)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class SublayerContext:
    """What one forward pass shares across sublayers when a backbone option needs per-pass state.

    Made fresh by `GPT.forward` for every pass and handed to the scheme in place of the bare RoPE
    (schemes pass it through untouched), so no state outlives a pass or lives in a global.
      rope:        the model's RoPE module
      value_first: the first attention sublayer's raw values (B, H, T, Dh), set by that sublayer
                   (value_residual); None until then
    """

    def __init__(self, rope: RoPE) -> None:
        self.rope = rope
        self.value_first: torch.Tensor | None = None


class Attention(nn.Module):
    """Causal multi-head self-attention with its own PreNorm: f(h) = Wo Attn(RoPE(Wq x), RoPE(Wk x), Wv x), x = RMSNorm(h).

    Options (docs/golf.md, PR #413), off by default and then absent from the module:
      value_residual: v <- value_mix[0] v + value_mix[1] v_1, v_1 = the first attention sublayer's
                      raw v of this pass; value_mix (2,) init (1, 0), so the option starts as a no-op
      attn_gate:      y_head <- sigmoid(x . gate_weight[head] + gate_bias[head]) y_head per token;
                      gate_weight (H, D) init 0, gate_bias (H,) init attn_gate_bias_init (4)
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)  # Wq, Wk, Wv stacked
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.value_residual, self.attn_gate = cfg.value_residual, cfg.attn_gate
        self.gate_bias_init = cfg.attn_gate_bias_init
        # Plain Parameters, not nn.Linear: the backbone init draws from the generator for every
        # nn.Linear, and these must not shift those draws (paired init across options).
        if self.value_residual:
            self.value_mix = nn.Parameter(torch.empty(2))
        if self.attn_gate:
            self.gate_weight = nn.Parameter(torch.empty(cfg.n_heads, cfg.d_model))  # (H, D)
            self.gate_bias = nn.Parameter(torch.empty(cfg.n_heads))  # (H,)

    @torch.no_grad()
    def reset_options(self) -> None:
        """Initialise the option parameters (no random draws): identity value mix, gate near 1."""
        if self.value_residual:
            self.value_mix.copy_(torch.tensor([1.0, 0.0]))
        if self.attn_gate:
            self.gate_weight.zero_()
            self.gate_bias.fill_(self.gate_bias_init)

    def forward(self, h: torch.Tensor, rope: RoPE | SublayerContext) -> torch.Tensor:
        B, T, D = h.shape
        # A SublayerContext arrives only when value_residual is on (GPT.forward decides).
        ctx = rope if isinstance(rope, SublayerContext) else None
        rope_fn = ctx.rope if ctx is not None else rope
        x = self.norm(h)  # (B, T, D)
        q, k, v = self.qkv(x).split(D, dim=-1)  # 3 x (B, T, D)
        q, k, v = (t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
        if self.value_residual:
            if ctx is None:
                raise ValueError("value_residual needs a SublayerContext; call the model, not a sublayer alone")
            if ctx.value_first is None:
                ctx.value_first = v  # the first attention sublayer of this pass caches its raw values
            v = self.value_mix[0] * v + self.value_mix[1] * ctx.value_first
        y = F.scaled_dot_product_attention(rope_fn(q), rope_fn(k), v, is_causal=True)  # (B, H, T, Dh)
        if self.attn_gate:
            gate = torch.sigmoid(x @ self.gate_weight.T + self.gate_bias)  # (B, T, H), per token and head
            y = y * gate.transpose(1, 2).unsqueeze(-1)  # (B, H, T, Dh)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)


class SwiGLU(nn.Module):
    """SwiGLU MLP with its own PreNorm: f(h) = W2 (silu(W1 x) * W3 x), x = RMSNorm(h); three d x d_ff matrices."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.w1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)  # gate
        self.w3 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)  # up
        self.w2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)  # down

    def forward(self, h: torch.Tensor, rope: RoPE) -> torch.Tensor:
        x = self.norm(h)  # (B, T, D)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, T, D)


class GPT(nn.Module):
    """Decoder-only LM: embed -> residual scheme over 2L sublayers -> RMSNorm -> tied head.

    Sublayers alternate attn_1, mlp_1, attn_2, mlp_2, ... (sublayer k is attention when k is even).
    Build it with `build_model(cfg, seed=...)`: the constructor allocates but does not initialise.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.sublayers = nn.ModuleList(
            Attention(cfg) if k % 2 == 0 else SwiGLU(cfg) for k in range(2 * cfg.n_layers)
        )
        self.rope = RoPE(cfg.d_model // cfg.n_heads, max_len=cfg.rope_max_len, base=cfg.rope_base)
        self.norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.residual: Residual = build_residual(cfg)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx, targets: (B, T) token ids -> logits (B, T, V) and mean cross-entropy in nats (or None)."""
        x = self.embed(idx)  # (B, T, D); no sqrt(d) scaling
        # Value residual needs per-pass state (layer 1's values); without it the bare RoPE goes in.
        rope = SublayerContext(self.rope) if self.cfg.value_residual else self.rope
        h = self.residual(x, self.sublayers, rope)  # the scheme owns the depth loop
        logits = self.norm(h) @ self.embed.weight.T  # tied head: (B, T, V)
        if targets is None:
            return logits, None
        # Loss in at least fp32 (bf16 logits are upcast; fp64 test models stay fp64).
        loss = F.cross_entropy(logits.flatten(0, 1).to(torch.promote_types(logits.dtype, torch.float32)), targets.flatten())
        return logits, loss

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Initialise every parameter and buffer from `seed` alone (global RNG untouched).

        | what                                   | init                                         |
        |----------------------------------------|----------------------------------------------|
        | embed.weight (tied head)               | normal(0, cfg.init_std), backbone generator  |
        | Linear weights (qkv, proj, w1, w3, w2) | normal(0, cfg.init_std), backbone generator  |
        | RMSNorm gains (sublayer and final)     | 1                                            |
        | attention value_mix (value_residual)   | (1, 0): v unchanged at init                  |
        | attention gate_weight / gate_bias      | 0 / attn_gate_bias_init (gate = 0.982)       |
        | RoPE cos/sin tables                    | from rope_base and rope_max_len              |
        | scheme parameters (residual.*)         | residual.reset_parameters(scheme generator): |
        |   ReZero alpha                         |   0                                          |
        |   LayerScale gamma                     |   cfg.resolved_layerscale_init               |
        |   router query w / key-norm gain       |   0 / 1 (uniform routing at init)            |
        |   HAARES detail bias beta (learned)    |   cfg.detail_bias_init                       |
        |   random_sign signs (buffer)           |   Rademacher from cfg.sign_seed              |
        |   recurrent loop_embed / cross_skip    |   0 / 0 (plain weight-shared loop at init)   |
        |   unet skip_weight                     |   1 (as the parameter-golf baseline)         |
        |   golf_attnres query                   |   0 (uniform over snapshots)                 |

        Backbone draws happen in a fixed order (embedding, then sublayers in order, each module's
        Linear layers in definition order) that does not involve the scheme, so for one seed every
        scheme gets bitwise-identical backbone weights. The scheme generator is seeded with
        seed + SCHEME_SEED_OFFSET and used only after the backbone.
        """
        gen = torch.Generator(device="cpu").manual_seed(seed)
        std = self.cfg.init_std
        backbone = [self.embed, *self.sublayers, self.norm]
        for root in backbone:
            for module in root.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    module.weight.normal_(0.0, std, generator=gen)
                elif isinstance(module, RMSNorm):
                    module.weight.fill_(1.0)
        for sublayer in self.sublayers:
            if isinstance(sublayer, Attention):
                sublayer.reset_options()  # after the draws: the options take nothing from `gen`
        self.rope.reset_parameters()
        scheme_gen = torch.Generator(device="cpu").manual_seed(seed + SCHEME_SEED_OFFSET)
        self.residual.reset_parameters(scheme_gen)


def build_model(cfg: ModelConfig, *, seed: int) -> GPT:
    """A CPU fp32 GPT initialised by `init_weights(seed)` (paired init; no global RNG used).

    Built on the meta device first so that construction neither allocates twice nor draws from
    the global RNG (nn.Linear's own default init would).
    """
    with torch.device("meta"):
        model = GPT(cfg)
    model = model.to_empty(device="cpu")
    model.init_weights(seed)
    return model


def n_params(model: nn.Module) -> int:
    """Parameter count of a built model (the tied embedding counted once)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["GPT", "RMSNorm", "RoPE", "Attention", "SublayerContext", "SwiGLU", "build_model", "n_params"]
