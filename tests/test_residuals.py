"""The residual schemes against the paper's formulas: registry sync, scheme identities at init,
the LayerScale depth rule, the reference router, a parity test of every scheme and ablation against
a direct, unoptimised transcription of model-spec.md section 4.1, HAARES -> Block AttnRes when the
detail bias goes to -inf, the stop-gradient on RMS matching, the fixed random signs, and a float64
gradcheck of HAARES with RMS matching on. The parameter-golf schemes' parity references are in
fixtures/golf_reference.py (their other tests: test_golf.py).
"""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest
import torch
from fixtures.golf_reference import GOLF_SCHEMES, golf_reference_stream

import haares.residual.haares as haares_module
from haares.config import ModelConfig, ResidualName
from haares.model import GPT, build_model
from haares.residual import RESIDUALS, build_residual
from haares.residual.haares import half_split_signs, random_signs
from haares.residual.recipes import rms_match
from haares.residual.router import Router, record_sources, route

torch.set_num_threads(1)  # tiny models: extra threads only contend on the shared 2-core machine
VOCAB = 32


def tiny(residual: str, **kw) -> ModelConfig:
    base = dict(vocab_size=VOCAB, d_model=32, n_layers=4, n_heads=2, d_ff=64, blocks=2, residual=residual)
    return ModelConfig(**{**base, **kw})


SCHEME_CONFIGS = {name: {"residual": name} for name in RESIDUALS} | {
    "haares_dup_b": {"residual": "haares", "detail": "dup_cumulative"},
    "haares_random_sign": {"residual": "haares", "detail": "random_sign"},
    "haares_bias_0": {"residual": "haares", "detail_bias": 0.0},
    "haares_bias_-2": {"residual": "haares", "detail_bias": -2.0},
    "haares_bias_-4": {"residual": "haares", "detail_bias": -4.0},
    "haares_no_rms": {"residual": "haares", "rms_match": False},
    "haares_n4": {"residual": "haares", "blocks": 4},  # S = 2
    "block_attnres_n4": {"residual": "block_attnres", "blocks": 4},
}


def idx_batch(seed: int = 0, B: int = 2, T: int = 10) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def perturbed(cfg: ModelConfig, *, seed: int = 0) -> GPT:
    """A float64 model whose scheme parameters are moved off their (zero / one) inits."""
    model = build_model(cfg, seed=seed).double()
    gen = torch.Generator().manual_seed(seed + 11)
    with torch.no_grad():
        for p in model.residual.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    return model


# --- a direct transcription of model-spec.md section 4.1 (and section 6 for the baselines) -------------


def ref_rms(z):
    return z.pow(2).mean(-1, keepdim=True).sqrt()


def ref_router(w, gain, eps, vals, biases):
    V = torch.stack(vals, 0)  # [m,B,T,d]
    keys = gain * V / torch.sqrt(V.pow(2).mean(-1, keepdim=True) + eps)
    logits = torch.einsum("d,mbtd->mbt", w, keys) + torch.stack(biases).view(-1, 1, 1)
    a = logits.softmax(0)
    return torch.einsum("mbt,mbtd->btd", a, V)


def reference_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    cfg, res = model.cfg, model.residual
    e = model.embed.weight[idx]
    K = 2 * cfg.n_layers
    f = lambda k, h: model.sublayers[k](h, model.rope)  # noqa: E731
    if cfg.residual == "standard":
        x = e
        for k in range(K):
            x = x + f(k, x)
    elif cfg.residual == "rezero":
        x = e
        for k in range(K):
            x = x + res.alpha[k] * f(k, x)
    elif cfg.residual == "layerscale":
        x = e
        for k in range(K):
            x = x + res.gamma[k] * f(k, x)
    elif cfg.residual in GOLF_SCHEMES:
        x = golf_reference_stream(model, e, f)
    else:
        N = cfg.blocks
        S = K // N
        mode = "bar" if cfg.residual == "block_attnres" else cfg.detail
        zero = torch.zeros((), dtype=e.dtype)
        if mode == "random_sign":
            sig = res.signs
        else:  # half-split: +1 for the first S/2 positions, -1 for the rest
            sig = torch.tensor([[1.0 if i < S // 2 else -1.0 for i in range(S)] for _ in range(N)], dtype=e.dtype)

        def extra_source(b, d):
            if mode == "dup_cumulative":
                return b
            if not cfg.rms_match:
                return d
            scale = (ref_rms(b) / (ref_rms(d) + cfg.rms_eps)).clamp(max=cfg.rms_max_scale)
            return d * scale.detach()

        def det_bias(n):
            if cfg.detail_bias == "learned":
                return res.beta[n]
            return torch.tensor(float(cfg.detail_bias), dtype=e.dtype)

        vals, bias, cum = [e], [zero], [e]
        k = 0
        for n in range(N):
            b = d = None
            for i in range(S):
                v, bb = list(vals), list(bias)
                if b is not None:
                    v.append(b)
                    bb.append(zero)
                    if mode != "bar":
                        v.append(extra_source(b, d))
                        bb.append(det_bias(n))
                h = ref_router(res.routers[k].w, res.routers[k].gain, cfg.norm_eps, v, bb)
                y = f(k, h)
                b = y if b is None else b + y
                d = sig[n, i] * y if d is None else d + sig[n, i] * y
                k += 1
            vals.append(b)
            bias.append(zero)
            cum.append(b)
            if mode != "bar":
                vals.append(extra_source(b, d))
                bias.append(det_bias(n))
        x = ref_router(res.readout.w, res.readout.gain, cfg.norm_eps, cum, [zero] * len(cum))
    xn = model.norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + cfg.norm_eps)
    return xn @ model.embed.weight.T


# --- tests ------------------------------------------------------------------------------------------


def test_registry_matches_config_names():
    assert set(get_args(ResidualName)) == set(RESIDUALS)
    for name, cls in RESIDUALS.items():
        assert type(build_residual(tiny(name))) is cls


@pytest.mark.parametrize("variant", list(SCHEME_CONFIGS))
def test_every_scheme_matches_direct_spec_transcription(variant):
    model = perturbed(tiny(**SCHEME_CONFIGS[variant]), seed=3)
    idx = idx_batch()
    with torch.no_grad():
        ours, ref = model(idx)[0], reference_logits(model, idx)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_ablations_change_the_function():
    """Each ablation differs from HAARES on the same weights, so the parity test above can tell them apart."""
    idx = idx_batch()
    with torch.no_grad():
        base = perturbed(tiny("haares"), seed=3)(idx)[0]
        for variant in ("haares_dup_b", "haares_random_sign", "haares_bias_0", "haares_no_rms"):
            cfg = tiny(**SCHEME_CONFIGS[variant])
            model = perturbed(cfg, seed=3)
            assert not torch.allclose(model(idx)[0], base), variant


@pytest.mark.parametrize("name", list(RESIDUALS))
def test_build_residual_from_registry_has_expected_parameter_names(name):
    names = {n for n, _ in build_residual(tiny(name)).named_parameters()}
    expected = {
        "standard": set(),
        "rezero": {"alpha"},
        "layerscale": {"gamma"},
        "block_attnres": {f"routers.{k}.{p}" for k in range(8) for p in ("w", "gain")}
        | {"readout.w", "readout.gain"},
    }
    expected["haares"] = expected["block_attnres"] | {"beta"}
    expected |= {"golf_attnres": {"query"}, "recurrent": {"loop_embed", "cross_skip"}, "unet": {"skip_weight"}}
    assert names == expected[name]


def test_fixed_detail_bias_is_a_buffer_not_a_parameter():
    model = build_model(tiny("haares", detail_bias=-4.0), seed=0)
    assert "residual.beta" not in dict(model.named_parameters())
    assert torch.equal(model.residual.beta, torch.full((2,), -4.0))


def test_standard_equals_manual_loop():
    model = build_model(tiny("standard"), seed=1)
    idx = idx_batch()
    with torch.no_grad():
        x = model.embed(idx)
        for f in model.sublayers:
            x = x + f(x, model.rope)
        torch.testing.assert_close(model.residual(model.embed(idx), model.sublayers, model.rope), x)


def test_rezero_is_the_identity_at_init():
    model = build_model(tiny("rezero"), seed=1)
    x0 = model.embed(idx_batch())
    assert torch.equal(model.residual(x0, model.sublayers, model.rope), x0)
    assert torch.equal(model.residual.alpha, torch.zeros(8))


@pytest.mark.parametrize(("n_layers", "expected"), [(12, 0.1), (24, 1e-5), (48, 1e-6)])
def test_layerscale_init_follows_depth_rule(n_layers, expected):
    cfg = ModelConfig(vocab_size=16, d_model=16, n_layers=n_layers, n_heads=2, d_ff=16, residual="layerscale")
    model = build_model(cfg, seed=0)
    assert model.residual.gamma.shape == (2 * n_layers, 16)
    assert torch.equal(model.residual.gamma, torch.full_like(model.residual.gamma, expected))
    explicit = build_model(dataclasses.replace(cfg, layerscale_init=0.5), seed=0)
    assert torch.equal(explicit.residual.gamma, torch.full_like(explicit.residual.gamma, 0.5))


@pytest.mark.parametrize("name", ["block_attnres", "haares"])
def test_routers_are_uniform_at_init(name):
    """Zero queries and unit gains; so a router's weights are softmax(biases): uniform over the zero-bias
    sources, with the HAARES detail bias the only non-zero logit. Checked on the real second sublayer."""
    model = build_model(tiny(name), seed=2).double()
    routers = [*model.residual.routers, model.residual.readout]
    assert all(torch.equal(r.w, torch.zeros_like(r.w)) and torch.equal(r.gain, torch.ones_like(r.gain)) for r in routers)
    inputs, outputs = [], []
    model.sublayers[1].register_forward_pre_hook(lambda _m, a: inputs.append(a[0]))
    model.sublayers[0].register_forward_hook(lambda _m, _a, out: outputs.append(out))
    idx = idx_batch()
    with torch.no_grad():
        model(idx)
        e, y0 = model.embed(idx), outputs[0]
        if name == "block_attnres":
            expected = (e + y0) / 2  # sources e, b_1^(2) = y0
        else:  # sources e, b_1^(2), d_hat_1^(2) (= y0 rescaled by rms/(rms+eps)), biases 0, 0, -2
            a = torch.softmax(torch.tensor([0.0, 0.0, -2.0], dtype=torch.float64), 0)
            expected = a[0] * e + a[1] * y0 + a[2] * rms_match(y0, y0, eps=1e-6, max_scale=10.0)
    torch.testing.assert_close(inputs[0], expected, rtol=1e-12, atol=1e-12)


def test_route_with_zero_query_is_the_mean_and_matches_the_direct_formula():
    gen = torch.Generator().manual_seed(0)
    vals = [torch.randn(2, 3, 8, generator=gen, dtype=torch.float64) * s for s in (0.1, 1.0, 5.0)]
    zero_q = torch.zeros(8, dtype=torch.float64)
    gain = torch.ones(8, dtype=torch.float64)
    torch.testing.assert_close(route(vals, zero_q, gain, None, 1e-6), sum(vals) / 3)
    w, g = torch.randn(8, generator=gen, dtype=torch.float64), torch.rand(8, generator=gen, dtype=torch.float64)
    biases = torch.tensor([0.0, -1.0, 0.5], dtype=torch.float64)
    ours = route(torch.stack(vals), w, g, biases, 1e-6)
    torch.testing.assert_close(ours, ref_router(w, g, 1e-6, vals, list(biases)), rtol=1e-12, atol=1e-12)
    # Keys are RMS-normalised, values are not: scaling one source changes h but not the weights.
    scaled = [vals[0], vals[1] * 3.0, vals[2]]
    a = torch.softmax(torch.stack([(g * v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6)) @ w for v in vals]) + biases.view(-1, 1, 1), 0)
    torch.testing.assert_close(route(scaled, w, g, biases, 1e-6), a[0, ..., None] * vals[0] + a[1, ..., None] * 3 * vals[1] + a[2, ..., None] * vals[2], rtol=1e-6, atol=1e-9)


def test_haares_with_detail_bias_to_minus_infinity_equals_block_attnres():
    haares = perturbed(tiny("haares"), seed=5)
    bar = build_model(tiny("block_attnres"), seed=5).double()
    # Same routers: copy every shared scheme parameter (routers and readout) from HAARES.
    shared = {k: v for k, v in haares.residual.state_dict().items() if k.startswith(("routers.", "readout."))}
    bar.residual.load_state_dict(shared)
    idx = idx_batch()
    with torch.no_grad():
        assert not torch.allclose(haares(idx)[0], bar(idx)[0])  # the detail sources matter at beta ~ N(-2, .5)
        haares.residual.beta.fill_(-1e9)
        h, b = haares(idx)[0], bar(idx)[0]
    assert ((h - b).norm() / b.norm()).item() < 1e-6


def test_rms_matching_factor_carries_no_gradient():
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(2, 3, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    b = (torch.randn(2, 3, 8, generator=gen, dtype=torch.float64) * 4).requires_grad_()
    out = rms_match(d, b, eps=1e-6, max_scale=10.0)
    g = torch.randn(2, 3, 8, generator=gen, dtype=torch.float64)
    out.backward(g)
    scale = ref_rms(b.detach()) / (ref_rms(d.detach()) + 1e-6)
    torch.testing.assert_close(out.detach(), d.detach() * scale)
    assert b.grad is None  # b enters only through the detached factor
    torch.testing.assert_close(d.grad, g * scale)  # as if the factor were a constant
    # The cap binds when the halves nearly cancel.
    tiny_d = (d.detach() * 1e-4).requires_grad_()
    torch.testing.assert_close(ref_rms(rms_match(tiny_d, b, eps=1e-6, max_scale=10.0)), 10 * ref_rms(tiny_d.detach()))


def test_random_sign_pattern_is_fixed_by_its_seed():
    a = build_model(tiny("haares", detail="random_sign", sign_seed=3), seed=1).residual.signs
    b = build_model(tiny("haares", detail="random_sign", sign_seed=3), seed=2).residual.signs  # other model seed
    c = build_model(tiny("haares", detail="random_sign", sign_seed=4), seed=1).residual.signs
    assert torch.equal(a, b) and torch.equal(a, random_signs(2, 4, seed=3))
    assert set(a.unique().tolist()) <= {-1.0, 1.0}
    assert not torch.equal(random_signs(8, 12, seed=3), random_signs(8, 12, seed=4))
    assert a.shape == c.shape == (2, 4)
    half = build_model(tiny("haares"), seed=1).residual.signs
    assert torch.equal(half, half_split_signs(2, 4))
    assert half[0].tolist() == [1.0, 1.0, -1.0, -1.0]


def test_instrumentation_counts_routers_and_is_off_outside_the_context():
    model = build_model(tiny("haares"), seed=0)
    with record_sources(model) as rec:
        model(idx_batch())
    assert rec.sublayer == [1, 3, 3, 3, 3, 5, 5, 5] and rec.readout == [3]
    assert all(m.recorder is None for m in model.modules() if isinstance(m, Router))
    model(idx_batch())
    assert len(rec.sublayer) == 8


def test_gradcheck_haares_with_rms_matching(monkeypatch):
    """float64 gradcheck of a HAARES stack (L=2, one block of S=4, so both halves) w.r.t. the embedding,
    every router parameter and beta. The sg(.) in Eq. 7 makes the analytic gradient that of the function
    with the RMS factors held constant, so: (1) record the real factors; (2) gradcheck the model with
    rms_scale patched to return those constants; (3) the real model's gradients equal the patched model's."""
    cfg = ModelConfig(vocab_size=8, d_model=8, n_layers=2, n_heads=2, d_ff=16, blocks=1, residual="haares")
    model = perturbed(cfg, seed=1)
    names = [n for n, _ in model.residual.named_parameters()]
    x0 = torch.randn(1, 3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    inputs = (x0.clone().requires_grad_(), *(p.detach().clone().requires_grad_() for p in model.residual.parameters()))

    def run(x, *params):
        return torch.func.functional_call(model.residual, dict(zip(names, params, strict=True)), (x, model.sublayers, model.rope))

    real_rms_scale, scales = haares_module.rms_scale, []

    def recording(d, b, *, eps, max_scale):
        scales.append((ref_rms(b) / (ref_rms(d) + eps)).clamp(max=max_scale).detach())
        return real_rms_scale(d, b, eps=eps, max_scale=max_scale)

    monkeypatch.setattr(haares_module, "rms_scale", recording)
    real_out = run(*inputs)
    g = torch.randn_like(real_out)
    real_grads = torch.autograd.grad(real_out, inputs, g)
    assert len(scales) == 3 + 1 and not all(torch.allclose(s, torch.ones_like(s)) for s in scales)

    calls = iter(range(10**6))

    def frozen(d, b, *, eps, max_scale):
        return scales[next(calls) % len(scales)]

    monkeypatch.setattr(haares_module, "rms_scale", frozen)
    frozen_out = run(*inputs)
    torch.testing.assert_close(frozen_out, real_out, rtol=1e-13, atol=1e-13)
    for ours, ref in zip(real_grads, torch.autograd.grad(frozen_out, inputs, g), strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_route():
    gen = torch.Generator().manual_seed(1)
    args = [torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_() for s in [(3, 1, 2, 4), (4,), (4,), (3,)]]
    assert torch.autograd.gradcheck(lambda v, w, g, b: route(v, w, g, b, 1e-6), args)
