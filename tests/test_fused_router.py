"""The fused router computes the reference router's function (values and gradients), and swaps in
without touching any scheme: checked in float64 against `router.route` and by torch.autograd.gradcheck."""

from __future__ import annotations

import pytest
import torch

from haares.config import ModelConfig
from haares.equivalence import PLAIN, equivalence, prepare_model, randomize_routers
from haares.fastpath import FastPath
from haares.model import build_model
from haares.residual.fused_router import FusedRoute, route_fused
from haares.residual.router import Router, route, use_router


def _sources(m=5, b=2, t=3, d=8, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    vals = [torch.randn(b, t, d, generator=gen, dtype=dtype).requires_grad_() for _ in range(m)]
    query = torch.randn(d, generator=gen, dtype=dtype).requires_grad_()
    gain = torch.randn(d, generator=gen, dtype=dtype).requires_grad_()
    bias = torch.randn(m, generator=gen, dtype=dtype).requires_grad_()
    return vals, query, gain, bias


def test_fused_matches_reference_values_and_gradients_float64():
    vals, q, g, b = _sources()
    ref = route(vals, q, g, b, 1e-6)
    fused = route_fused(vals, q, g, b, 1e-6)
    assert torch.allclose(ref, fused, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(ref)
    grads_ref = torch.autograd.grad((ref * upstream).sum(), [*vals, q, g, b])
    grads_fused = torch.autograd.grad((fused * upstream).sum(), [*vals, q, g, b])
    for a, c in zip(grads_ref, grads_fused, strict=True):
        assert torch.allclose(a, c, rtol=1e-10, atol=1e-12)


def test_fused_gradcheck():
    vals, q, g, b = _sources(m=3, t=2, d=4)
    m = len(vals)
    assert torch.autograd.gradcheck(lambda *x: route_fused(list(x[:m]), x[m], x[m + 1], x[m + 2], 1e-6), (*vals, q, g, b))


def test_fused_without_bias_and_stacked_input():
    vals, q, g, _ = _sources()
    stacked = torch.stack(vals)
    assert torch.allclose(route(stacked, q, g, None, 1e-6), route_fused(stacked, q, g, None, 1e-6), atol=1e-12)


@pytest.mark.parametrize("residual", ["block_attnres", "haares"])
def test_swapping_the_router_keeps_the_model_function(residual):
    cfg = ModelConfig(d_model=32, d_ff=64, n_layers=2, n_heads=2, blocks=2, vocab_size=64, residual=residual)
    check = equivalence(cfg, device=torch.device("cpu"), fast=FastPath(router="fused", compile=False, cuda_graph=False),
                        precision="fp32", batch_size=2, seq_len=16)
    assert check["logits_rel_err"] < 1e-5 and check["grads_rel_err"] < 1e-5


def test_randomized_routers_are_not_uniform_and_unknown_impl_is_rejected():
    cfg = ModelConfig(d_model=32, d_ff=64, n_layers=2, n_heads=2, blocks=2, vocab_size=64)
    model = build_model(cfg, seed=0)
    randomize_routers(model, seed=2)
    assert any(m.w.abs().sum() > 0 for m in model.modules() if isinstance(m, Router))
    use_router(model, "fused")
    impls = {id(m.route_fn) for m in model.modules() if isinstance(m, Router)}
    assert len(impls) == 1, "one FusedRoute shared by every router of a model"
    assert all(isinstance(m.route_fn, FusedRoute) for m in model.modules() if isinstance(m, Router))
    with pytest.raises(ValueError, match="unknown router"):
        use_router(model, "triton-someday")


def _saved_storages(fn):
    """Run fn() under a saved-tensor hook: {storage pointer: (bytes, shape)} of what autograd saved."""
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = (t.untyped_storage().nbytes(), tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved


@pytest.mark.parametrize("with_half", [False, True])
def test_a_detail_recipe_is_rebuilt_in_backward_not_saved(with_half):
    """A source given as a Detail recipe routes and differentiates bit for bit as when it is saved."""
    from haares.residual.haares import Detail

    vals, q, g, bias = _sources(m=3, dtype=torch.float32)
    base, half = vals[1], vals[2]
    scale = torch.rand(2, 3, 1) + 0.5
    detail = ((2 * half - base) if with_half else base) * scale
    sources = [vals[0], base, detail, half]
    recipe = Detail(slot=2, base=1, half=half if with_half else None, scale=scale)
    bias = torch.cat([bias, torch.zeros(1)])
    plain = route_fused(sources, q, g, bias, 1e-6)
    lean, saved = _saved_storages(lambda: route_fused(sources, q, g, bias, 1e-6, [recipe]))
    assert torch.equal(plain, lean)
    assert saved and detail.untyped_storage().data_ptr() not in saved
    assert base.untyped_storage().data_ptr() in saved
    upstream = torch.randn_like(plain)
    inputs = [*vals, q, g]
    for a, c in zip(torch.autograd.grad((plain * upstream).sum(), inputs, retain_graph=True),
                    torch.autograd.grad((lean * upstream).sum(), inputs), strict=True):
        assert torch.equal(a, c)


def test_a_recipe_that_fills_its_scale_routes_bit_for_bit_as_the_glue_computed_detail():
    """Inductor's bodies (the kernels' fallback) fill a `Detail.fill` scale with `rms_scale` itself: the
    same factor, routing and gradients as the detail next_sources materialised, bit for bit, and the
    backward reads the filled scale."""
    from haares.residual.haares import Detail
    from haares.residual.recipes import rms_scale

    vals, q, g, bias = _sources(m=3, dtype=torch.float32)
    base, half = vals[1], vals[2]
    with torch.no_grad():
        want = rms_scale(2 * half - base, base, eps=1e-6, max_scale=10.0)
    detail = (2 * half - base) * want
    scale = torch.full_like(want, float("nan"))
    plain = route_fused([vals[0], base, detail], q, g, bias, 1e-6)
    fused = FusedRoute(virtual_details=True)
    filled = fused([vals[0], base, None], q, g, bias, 1e-6, [Detail(2, 1, half, scale, fill=(1e-6, 10.0))])
    assert torch.equal(scale, want) and torch.equal(plain, filled)
    upstream = torch.randn_like(plain)
    inputs = [*vals, q, g]
    for a, c in zip(torch.autograd.grad((plain * upstream).sum(), inputs, retain_graph=True),
                    torch.autograd.grad((filled * upstream).sum(), inputs), strict=True):
        assert torch.equal(a, c)


def test_haares_on_the_fused_router_saves_no_full_size_tensor_more_than_block_attnres():
    """HAARES's details are rebuilt in backward, so beyond Block AttnRes it saves only per-token
    scalars (routing weights, statistics, RMS factors): the memory target of the fast path."""
    idx = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    full_size = {}
    for residual in ["block_attnres", "haares"]:
        cfg = ModelConfig(d_model=32, d_ff=64, n_layers=4, n_heads=2, blocks=2, vocab_size=64, residual=residual)
        model = build_model(cfg, seed=0)
        use_router(model, "fused")
        (_, loss), saved = _saved_storages(lambda model=model: model(idx, idx))
        loss.backward()
        full_size[residual] = sorted(shape for nbytes, shape in saved.values() if nbytes >= 4 * 16 * 32 * 4)
    assert full_size["block_attnres"], "no saved activations were seen"
    assert full_size["haares"] == full_size["block_attnres"]


def test_sources_read_by_several_routers_get_the_sum_of_their_gradients():
    """The running gradient sums (`_Shared`): a source read by three routers, one of which reads it
    twice, gets exactly the reference's gradient (float64), and the sums are emptied after backward."""
    vals, q, g, _ = _sources(m=3)
    shared, other, third = vals
    calls = [[shared, other], [shared, third, shared], [other, shared]]
    upstream = [torch.randn(2, 3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(k)) for k in range(3)]

    def loss(route_fn):
        return sum((route_fn(srcs, q, g, None, 1e-6) * up).sum() for srcs, up in zip(calls, upstream, strict=True))

    fused = FusedRoute()
    grads_ref = torch.autograd.grad(loss(route), [*vals, q, g])
    grads_fused = torch.autograd.grad(loss(fused), [*vals, q, g])
    for a, c in zip(grads_ref, grads_fused, strict=True):
        assert torch.allclose(a, c, rtol=1e-10, atol=1e-12)
    assert fused._shared and all(total.grad is None for _, total, _ in fused._shared.values())


@pytest.mark.parametrize("table_grad", [True, False])
def test_routers_sharing_a_bias_table_read_its_prefixes_and_sum_its_gradient(table_grad):
    """HAARES's routers take one bias table and use its first M entries: values and the table's gradient
    (one running sum over the routers, float64) are the reference's; a table that needs no gradient
    gets none; a table shorter than the sources is refused."""
    vals, q, g, _ = _sources(m=5)
    table = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_(table_grad)
    calls = [vals[:3], vals, vals[:5], vals[:1]]
    upstream = [torch.randn(2, 3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(k)) for k in range(4)]

    def loss(route_fn):
        return sum((route_fn(srcs, q, g, table, 1e-6) * up).sum() for srcs, up in zip(calls, upstream, strict=True))

    inputs = [*vals, q, g, *([table] if table_grad else [])]
    grads_ref = torch.autograd.grad(loss(route), inputs)
    fused = FusedRoute()
    grads_fused = torch.autograd.grad(loss(fused), inputs)
    assert len(grads_ref) == len(inputs)
    for a, c in zip(grads_ref, grads_fused, strict=True):
        assert torch.allclose(a, c, rtol=1e-10, atol=1e-12)
    if table_grad:
        assert grads_fused[-1][5:].abs().max() == 0 and grads_fused[-1][:5].abs().min() > 0
    assert fused._shared and all(total.grad is None for _, total, _ in fused._shared.values())
    with pytest.raises(ValueError, match="5 sources need at least 5 biases, got 4"):
        fused(vals, q, g, table[:4], 1e-6)


@pytest.mark.parametrize("router", ["fused", "triton_virtual"])
def test_haares_detail_biases_get_the_reference_gradient(router):
    """beta (N,) is two numbers among thousands, so the models' all-parameter checks would hide a wrong
    gradient for it; compared alone here (its routers share one bias table and its running sum)."""
    if router.startswith("triton"):
        pytest.importorskip("haares.residual.triton_router")
    cfg = ModelConfig(d_model=32, d_ff=64, n_layers=4, n_heads=2, blocks=2, vocab_size=64, residual="haares",
                      detail_bias_init=0.3)
    tok = torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(1))
    grads = []
    for path in (PLAIN, FastPath(router=router, compile=False, cuda_graph=False)):
        model = prepare_model(cfg, device=torch.device("cpu"), fast=path)
        randomize_routers(model, seed=2)
        model(tok[:, :-1], tok[:, 1:])[1].backward()
        grads.append(model.residual.beta.grad)
    ref, got = grads
    assert ref.shape == (2,) and ref.abs().min() > 0
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-8), (got, ref)


@pytest.mark.slow
@pytest.mark.parametrize("residual", ["block_attnres", "haares"])
def test_the_compiled_fast_path_computes_the_reference_function_on_the_cpu(residual):
    """What CUDA runs minus the graph: the fused router's bodies, HAARES's glue and the sublayers
    compiled by Inductor (here for the CPU), detail recipes and running gradient sums included."""
    cfg = ModelConfig(d_model=32, d_ff=64, n_layers=2, n_heads=2, blocks=2, vocab_size=64, residual=residual)
    check = equivalence(cfg, device=torch.device("cpu"), fast=FastPath(router="fused", compile=True, cuda_graph=False),
                        precision="fp32", batch_size=2, seq_len=16)
    assert check["logits_rel_err"] < 1e-5 and check["grads_rel_err"] < 1e-5


def test_the_gradient_sums_go_with_their_sources():
    """Nothing outlives a step: once a forward's sources are freed, the router keeps no entry for them."""
    cfg = ModelConfig(d_model=32, d_ff=64, n_layers=2, n_heads=2, blocks=2, vocab_size=64, residual="haares")
    model = build_model(cfg, seed=0)
    use_router(model, "fused")
    fused = next(m.route_fn for m in model.modules() if isinstance(m, Router))
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    _, loss = model(idx, idx)
    assert fused._shared, "the routers made no gradient sums"
    loss.backward()
    del loss
    assert fused._shared == {}
