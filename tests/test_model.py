"""The backbone and paired init: shapes, loss in nats, RoPE, causality, determinism, identical
backbones across schemes, the first sublayer's input, and gradient reaching every parameter.

Every scheme test runs over RESIDUALS.items() on tiny CPU models (d=32, 4 layers, N=2 blocks of 4).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from haares.config import ModelConfig
from haares.model import GPT, RoPE, build_model, n_params
from haares.residual import RESIDUALS

VOCAB = 32
torch.set_num_threads(1)  # tiny models: extra threads only contend on the shared 2-core machine


def tiny(residual: str, **kw) -> ModelConfig:
    base = dict(vocab_size=VOCAB, d_model=32, n_layers=4, n_heads=2, d_ff=64, blocks=2, residual=residual)
    return ModelConfig(**{**base, **kw})


# The paper's ablations, as config values over HAARES.
ABLATIONS = {
    "dup_b": {"detail": "dup_cumulative"},
    "random_sign": {"detail": "random_sign"},
    "bias_0": {"detail_bias": 0.0},
    "bias_-4": {"detail_bias": -4.0},
    "no_rms": {"rms_match": False},
}


def tokens(seed: int = 0, B: int = 2, T: int = 12) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def perturb_scheme(model: GPT, seed: int = 7, scale: float = 0.5) -> None:
    """Move the scheme's parameters off their init (zero queries etc.) so routing is non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.residual.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)


@pytest.mark.parametrize("name", list(RESIDUALS))
def test_shapes_dtype_and_loss_is_mean_cross_entropy_in_nats(name):
    model = build_model(tiny(name), seed=1)
    idx, targets = tokens(0), tokens(1)
    logits, loss = model(idx, targets)
    assert logits.shape == (2, 12, VOCAB) and logits.dtype == torch.float32
    manual = -torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).mean()
    torch.testing.assert_close(loss, manual)
    # At init the logits are small (std 0.02 weights), so the loss is near ln V.
    assert abs(loss.item() - math.log(VOCAB)) < 0.5
    assert model(idx)[1] is None


def test_model_is_cpu_fp32_with_no_biases_and_tied_head():
    model = build_model(tiny("standard"), seed=0)
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    # Tied head: the logits are the final-normed stream times the embedding matrix.
    idx = tokens()
    with torch.no_grad():
        x = model.embed(idx)
        h = model.residual(x, model.sublayers, model.rope)
        expected = model.norm(h) @ model.embed.weight.T
        torch.testing.assert_close(model(idx)[0], expected)
    assert sum(p is model.embed.weight for p in model.parameters()) == 1


def test_rope_preserves_norm_and_depends_only_on_relative_position():
    rope = RoPE(8, max_len=64, base=10000.0)
    rope.reset_parameters()
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=gen), torch.randn(1, 1, 1, 8, generator=gen)
    seq = lambda v, T: v.expand(1, 1, T, 8).contiguous()  # noqa: E731 - same vector at every position
    rq, rk = rope(seq(q, 40)), rope(seq(k, 40))
    torch.testing.assert_close(rq.norm(dim=-1), seq(q, 40).norm(dim=-1))
    # <R_m q, R_n k> depends on m - n only.
    dot = lambda m, n: (rq[0, 0, m] * rk[0, 0, n]).sum()  # noqa: E731
    torch.testing.assert_close(dot(5, 2), dot(30, 27), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(dot(5, 2), dot(5, 3))
    with pytest.raises(ValueError, match="rope_max_len"):
        rope(torch.zeros(1, 1, 65, 8))


@pytest.mark.parametrize("name", list(RESIDUALS))
def test_every_scheme_is_causal(name):
    model = build_model(tiny(name), seed=3)
    perturb_scheme(model)
    idx = tokens(0, B=1, T=10)
    for t in (0, 4, 8):
        changed = idx.clone()
        changed[0, t + 1 :] = (changed[0, t + 1 :] + 1) % VOCAB
        with torch.no_grad():
            a, b = model(idx)[0], model(changed)[0]
        assert torch.equal(a[:, : t + 1], b[:, : t + 1])
        assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


@pytest.mark.parametrize("name", list(RESIDUALS))
def test_same_seed_gives_identical_weights_and_logits_whatever_the_global_rng(name):
    torch.manual_seed(123)
    a = build_model(tiny(name), seed=5)
    rng_after = torch.get_rng_state()
    torch.manual_seed(999)
    b = build_model(tiny(name), seed=5)
    c = build_model(tiny(name), seed=6)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.embed.weight, c.embed.weight)
    idx = tokens()
    assert torch.equal(a(idx)[0], b(idx)[0])
    # build_model draws nothing from the global RNG.
    torch.manual_seed(123)
    build_model(tiny(name), seed=5)
    assert torch.equal(torch.get_rng_state(), rng_after)


def test_backbone_weights_are_identical_across_schemes_and_ablations():
    configs = [tiny(name) for name in RESIDUALS] + [tiny("haares", **kw) for kw in ABLATIONS.values()]
    configs.append(tiny("haares", blocks=4, n_layers=4))  # S = 2; a different block count
    models = [build_model(cfg, seed=42) for cfg in configs]
    backbone = {k: v for k, v in models[0].state_dict().items() if not k.startswith("residual.")}
    assert len(backbone) == 1 + 4 * 7 + 1  # embed; per layer 2 norms, qkv, proj, w1, w2, w3; final norm
    for model in models[1:]:
        state = model.state_dict()
        for key, value in backbone.items():
            assert torch.equal(state[key], value), key


def test_init_table_values():
    cfg = tiny("haares")
    model = build_model(cfg, seed=0)
    for name, p in model.named_parameters():
        if name.startswith("residual."):
            continue
        if "norm" in name:
            assert torch.equal(p, torch.ones_like(p)), name
        else:  # embedding and Linear weights: normal(0, init_std)
            assert abs(p.mean().item()) < 0.01 and abs(p.std().item() - cfg.init_std) < 0.004, name
    assert torch.equal(model.residual.beta, torch.full((2,), -2.0))


@pytest.mark.parametrize("name", list(RESIDUALS))
def test_first_sublayer_input_is_the_embedding(name):
    model = build_model(tiny(name), seed=2)
    seen = []
    model.sublayers[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    idx = tokens()
    model(idx)
    assert torch.equal(seen[0], model.embed(idx).detach())


@pytest.mark.parametrize("name", list(RESIDUALS))
def test_backward_reaches_every_parameter(name):
    model = build_model(tiny(name), seed=4)
    idx, targets = tokens(0), tokens(1)
    model(idx, targets)[1].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    if name == "rezero":  # at init only alpha (and the embedding, through x0) can move
        assert grads["residual.alpha"].abs().min() > 0
    # After an optimizer-free step off the zero inits, every parameter gets a non-zero gradient,
    # except the first router's: it routes one source (e), and a softmax over one source is 1.
    model.zero_grad()
    perturb_scheme(model, scale=0.1)
    model(idx, targets)[1].backward()
    for n, p in model.named_parameters():
        if n.startswith("residual.routers.0."):
            assert torch.equal(p.grad, torch.zeros_like(p)), n
        else:
            assert p.grad.abs().sum() > 0, n


def test_n_params_counts_the_tied_embedding_once():
    model = build_model(tiny("standard"), seed=0)
    d, ff, L = 32, 64, 4
    assert n_params(model) == VOCAB * d + L * (2 * d + 4 * d * d + 3 * d * ff) + d


def test_sdpa_attention_matches_explicit_causal_softmax():
    model = build_model(tiny("standard"), seed=0).double()
    attn = model.sublayers[0]
    h = torch.randn(1, 6, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = attn.norm(h)
    q, k, v = attn.qkv(x).split(32, dim=-1)
    q, k, v = (t.view(1, 6, 2, 16).transpose(1, 2) for t in (q, k, v))
    q, k = model.rope(q), model.rope(k)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(16)
    scores = scores.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
    y = (F.softmax(scores, -1) @ v).transpose(1, 2).reshape(1, 6, 32)
    torch.testing.assert_close(attn(h, model.rope), attn.proj(y))
