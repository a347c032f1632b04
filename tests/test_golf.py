"""The parameter-golf schemes and backbone options (docs/golf.md) against their specs: the identity
or near-identity each starts from, reductions to Standard when a knob is switched off, a direct
transcription of value residual + gated attention, causality and determinism with the options on,
float64 gradchecks of every new scheme and of the options, and exact parameter counts (cost.py).
Scheme-generic checks (shapes, causality, backward reach, parity) run over RESIDUALS elsewhere.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from haares import cost
from haares.config import ConfigError, ModelConfig
from haares.model import Attention, SublayerContext, build_model, n_params
from haares.residual import RESIDUALS

torch.set_num_threads(1)
VOCAB = 32
OPTIONS = {"value_residual": True, "attn_gate": True}
NEW_SCHEMES = ("golf_attnres", "recurrent", "unet")


def tiny(residual: str = "standard", **kw) -> ModelConfig:
    base = dict(vocab_size=VOCAB, d_model=32, n_layers=4, n_heads=2, d_ff=64, blocks=2, residual=residual)
    return ModelConfig(**{**base, **kw})


def tokens(seed: int = 0, B: int = 2, T: int = 10) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def perturb(params, seed: int = 3, scale: float = 0.3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)


def option_params(model):
    return [p for n, p in model.named_parameters() if n.endswith(("value_mix", "gate_weight", "gate_bias"))]


def test_new_schemes_are_registered():
    assert set(NEW_SCHEMES) <= set(RESIDUALS)


# --- identities at init and reductions -------------------------------------------------------------


def test_recurrent_at_init_is_the_plain_weight_shared_loop():
    model = build_model(tiny("recurrent", repeats=3), seed=1)
    assert torch.equal(model.residual.loop_embed, torch.zeros(12, 32))
    assert torch.equal(model.residual.cross_skip, torch.zeros(2, 4))
    idx = tokens()
    with torch.no_grad():
        x = model.embed(idx)
        for _ in range(3):
            for f in model.sublayers:
                x = x + f(x, model.rope)
        assert torch.equal(model.residual(model.embed(idx), model.sublayers, model.rope), x)


@pytest.mark.parametrize(("residual", "knob"), [("recurrent", {"repeats": 1}), ("unet", None), ("golf_attnres", {"golf_blend": 0.0})])
def test_switched_off_schemes_equal_standard_bitwise(residual, knob):
    """repeats = 1 (zero loop embedding), U-Net skip weights 0, golf blend 0: each is Standard exactly."""
    model = build_model(tiny(residual, **(knob or {})), seed=2)
    if residual == "unet":
        with torch.no_grad():
            model.residual.skip_weight.zero_()
    elif residual == "golf_attnres":
        perturb(model.residual.parameters())  # any routing: a zero blend must ignore it
    standard = build_model(tiny("standard"), seed=2)
    idx = tokens()
    with torch.no_grad():
        assert torch.equal(model(idx)[0], standard(idx)[0])


def test_unet_starts_with_unit_skips_and_they_change_the_function():
    model = build_model(tiny("unet"), seed=2)
    assert torch.equal(model.residual.skip_weight, torch.ones(2, 32))
    with torch.no_grad():
        assert not torch.allclose(model(tokens())[0], build_model(tiny("standard"), seed=2)(tokens())[0])


def test_golf_attnres_at_init_routes_uniformly_over_detached_snapshots():
    """Zero queries: layer 2 (block 2) reads 0.75 x + 0.25 mean(sg(e), sg(x after block 1))."""
    model = build_model(tiny("golf_attnres"), seed=4)
    seen, streams = [], []
    model.sublayers[4].register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    model.sublayers[3].register_forward_hook(lambda _m, a, out: streams.append(a[0] + out))
    model.sublayers[1].register_forward_hook(lambda _m, a, out: streams.append(a[0] + out))
    idx = tokens()
    model(idx)
    e, after_block1 = model.embed(idx), streams[1]  # stream after layer 1 (the first block's end)
    expected = torch.lerp(after_block1, (e + after_block1) / 2, 0.25)
    torch.testing.assert_close(seen[0], expected)
    assert seen[0].requires_grad  # the stream part carries gradient; the snapshots do not (below)


def test_golf_attnres_snapshots_carry_no_gradient():
    """With the blend at 1 the second block's attention reads only snapshots: its gradient reaches
    the queries but no earlier sublayer through that path."""
    model = build_model(tiny("golf_attnres", golf_blend=1.0, n_layers=2), seed=4).double()
    perturb(model.residual.parameters())
    h_inputs = []
    model.sublayers[2].register_forward_pre_hook(lambda _m, a: h_inputs.append(a[0]))
    model(tokens())
    g_query, g_first = torch.autograd.grad(
        h_inputs[0].sum(), [model.residual.query, model.sublayers[0].qkv.weight], allow_unused=True
    )
    assert g_query is not None and g_query.abs().sum() > 0
    # lerp(x, r, 1) keeps x in the graph with weight 1 - 1 = 0: exactly zero, not merely small.
    assert g_first is None or torch.equal(g_first, torch.zeros_like(g_first))


def test_value_residual_at_init_is_bitwise_a_no_op():
    idx = tokens()
    for residual in ("standard", "recurrent", "haares"):
        plain, with_vr = build_model(tiny(residual), seed=5), build_model(tiny(residual, value_residual=True), seed=5)
        with torch.no_grad():
            assert torch.equal(plain(idx)[0], with_vr(idx)[0]), residual
        assert all(torch.equal(m.value_mix, torch.tensor([1.0, 0.0])) for m in with_vr.sublayers if isinstance(m, Attention))


def test_attention_gate_at_init_scales_every_head_by_sigmoid_4():
    plain, gated = build_model(tiny(), seed=6), build_model(tiny(attn_gate=True), seed=6)
    h = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = plain.sublayers[0](h, plain.rope), gated.sublayers[0](h, gated.rope)
    torch.testing.assert_close(b, a * torch.sigmoid(torch.tensor(4.0)), rtol=1e-5, atol=1e-7)
    assert torch.equal(gated.sublayers[0].gate_bias, torch.full((2,), 4.0))


def test_backbone_weights_are_identical_with_and_without_options():
    a, b = build_model(tiny(), seed=7).state_dict(), build_model(tiny(**OPTIONS), seed=7).state_dict()
    assert set(a) < set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- value residual + gated attention against a direct transcription ---------------------------------


def reference_attention_stack(model, idx):
    """Standard residual over sublayers whose attention is written from docs/golf.md directly."""
    cfg = model.cfg
    D, H = cfg.d_model, cfg.n_heads
    x = model.embed(idx)
    B, T, _ = x.shape
    v_first = None
    for k, f in enumerate(model.sublayers):
        if k % 2:
            x = x + f(x, model.rope)
            continue
        n = f.norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + cfg.norm_eps)
        q, kk, v = (n @ f.qkv.weight.T).split(D, -1)
        q, kk, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, kk, v))
        if v_first is None:
            v_first = v
        v = f.value_mix[0] * v + f.value_mix[1] * v_first
        q, kk = model.rope(q), model.rope(kk)
        scores = (q @ kk.transpose(-1, -2)) / math.sqrt(D // H)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        y = F.softmax(scores, -1) @ v  # (B, H, T, Dh)
        gate = 1 / (1 + torch.exp(-(torch.einsum("btd,hd->bht", n, f.gate_weight) + f.gate_bias.view(1, H, 1))))
        x = x + (y * gate.unsqueeze(-1)).transpose(1, 2).reshape(B, T, D) @ f.proj.weight.T
    xn = model.norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + cfg.norm_eps)
    return xn @ model.embed.weight.T


def test_value_residual_and_gate_match_the_direct_transcription():
    model = build_model(tiny(**OPTIONS), seed=8).double()
    perturb(option_params(model))
    idx = tokens()
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], reference_attention_stack(model, idx), rtol=1e-10, atol=1e-10)


def test_value_residual_needs_the_model_context():
    model = build_model(tiny(value_residual=True), seed=0)
    with pytest.raises(ValueError, match="SublayerContext"):
        model.sublayers[0](torch.zeros(1, 3, 32), model.rope)


@pytest.mark.parametrize("residual", ["standard", "recurrent", "golf_attnres"])
def test_options_are_causal_and_deterministic(residual):
    model = build_model(tiny(residual, **OPTIONS), seed=3)
    perturb([*option_params(model), *model.residual.parameters()])
    again = build_model(tiny(residual, **OPTIONS), seed=3)
    perturb([*option_params(again), *again.residual.parameters()])
    idx = tokens(0, B=1, T=10)
    with torch.no_grad():
        assert torch.equal(model(idx)[0], again(idx)[0])
        for t in (0, 5):
            changed = idx.clone()
            changed[0, t + 1 :] = (changed[0, t + 1 :] + 1) % VOCAB
            a, b = model(idx)[0], model(changed)[0]
            assert torch.equal(a[:, : t + 1], b[:, : t + 1])
            assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_options_get_gradient():
    model = build_model(tiny(**OPTIONS), seed=3)
    model(tokens(0), tokens(1))[1].backward()
    params = option_params(model)
    assert len(params) == 3 * 4
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


# --- float64 gradchecks ------------------------------------------------------------------------------


def _gradcheck_scheme(cfg: ModelConfig, wrt_input: bool) -> None:
    model = build_model(cfg, seed=1).double()
    perturb(model.residual.parameters(), scale=0.2)
    names = [n for n, _ in model.residual.named_parameters()]
    x0 = torch.randn(1, 3, cfg.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    params = [p.detach().clone().requires_grad_() for p in model.residual.parameters()]

    def run(x, *ps):
        return torch.func.functional_call(model.residual, dict(zip(names, ps, strict=True)), (x, model.sublayers, model.rope))

    if wrt_input:
        assert torch.autograd.gradcheck(run, (x0.requires_grad_(), *params), eps=1e-6, atol=1e-6, rtol=1e-4)
    else:  # golf_attnres: its snapshots are detached, so only the queries have a true gradient here
        assert torch.autograd.gradcheck(lambda *ps: run(x0, *ps), params, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("residual", ["recurrent", "unet"])
def test_gradcheck_scheme(residual):
    _gradcheck_scheme(ModelConfig(vocab_size=8, d_model=8, n_layers=2, n_heads=2, d_ff=16, residual=residual, repeats=2), True)


def test_gradcheck_golf_attnres_queries():
    """With G = 2 blocks the only snapshot a query sees (after block 1) depends on no query, so the
    function of the queries is exactly what autograd differentiates."""
    _gradcheck_scheme(ModelConfig(vocab_size=8, d_model=8, n_layers=4, n_heads=2, d_ff=16, residual="golf_attnres"), False)


def test_gradcheck_attention_with_value_residual_and_gate():
    cfg = ModelConfig(vocab_size=8, d_model=8, n_layers=2, n_heads=2, d_ff=16, residual="standard", **OPTIONS)
    model = build_model(cfg, seed=2).double()
    perturb(option_params(model))
    first, second = model.sublayers[0], model.sublayers[2]
    names = [n for n, _ in second.named_parameters()]
    h = torch.randn(1, 4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def run(h1, h2, *ps):
        ctx = SublayerContext(model.rope)
        y1 = first(h1, ctx)  # caches v_1 in ctx
        return y1, torch.func.functional_call(second, dict(zip(names, ps, strict=True)), (h2, ctx))

    inputs = (h.clone().requires_grad_(), (h * 0.5).requires_grad_(), *(p.detach().clone().requires_grad_() for p in second.parameters()))
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


# --- parameter counts and config -----------------------------------------------------------------------

COUNT_VARIANTS = [
    {"residual": r, **extra}
    for r in RESIDUALS
    for extra in ({}, OPTIONS, {"value_residual": True}, {"attn_gate": True, "n_heads": 4})
] + [{"residual": "recurrent", "repeats": 1}, {"residual": "unet", "n_layers": 3}, {"residual": "golf_attnres", "golf_blocks": 4}]


@pytest.mark.parametrize("variant", COUNT_VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_param_count_equals_the_built_model(variant):
    cfg = tiny(**variant)
    assert cost.param_count(cfg) == n_params(build_model(cfg, seed=0))


def test_recurrent_flops_scale_with_passes():
    one, four = tiny("recurrent", repeats=1), tiny("recurrent", repeats=4)
    assert cost.effective_layers(four) == 16
    ratio = cost.model_flops_per_token(four, 64) / cost.model_flops_per_token(one, 64)
    assert 3.0 < ratio < 4.0  # the embedding/head term does not repeat


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"residual": "golf_attnres", "golf_blocks": 3}, "golf_blocks"), ({"repeats": 0}, "repeats"),
     ({"golf_blend": 1.5}, "golf_blend"), ({"golf_temperature": 0.0}, "golf_temperature")],
)
def test_config_rejects_bad_golf_values(fields, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**fields)


def test_source_memory_counts_the_golf_snapshots():
    cfg = tiny("golf_attnres", golf_blocks=4)
    assert cost.source_memory_bytes(cfg, 2, 8) == 4 * 2 * 8 * 32 * 4  # sg(e) + 3 inner block ends
    assert cost.source_memory_bytes(tiny("recurrent"), 2, 8) == 0 == cost.source_memory_bytes(tiny("unet"), 2, 8)
