"""The fused router's Triton kernels compute the reference router's function, run here on the CPU by
Triton's interpreter (TRITON_INTERPRET=1, set by conftest.py): the same kernel code CUDA compiles, op
for op in NumPy."""

from __future__ import annotations

import pytest
import torch

from haares.config import ModelConfig, TrainConfig
from haares.equivalence import equivalence
from haares.errors import HaaresError
from haares.fastpath import FastPath, resolve_fast_path
from haares.residual.fused_router import FusedRoute
from haares.residual.haares import Detail
from haares.residual.router import route

triton_router = pytest.importorskip("haares.residual.triton_router")


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts of forward and backward kernel launches through `triton_router`."""
    calls = {"forward": 0, "backward": 0}
    for name in calls:
        real = getattr(triton_router, name)

        def counted(*args, name=name, real=real):
            calls[name] += 1
            return real(*args)

        monkeypatch.setattr(triton_router, name, counted)
    return calls


def _leaves(n, b=2, t=3, d=48, seed=0):
    """n float64 leaves (B, T, D): the reference's inputs; the kernels get fp32 copies. D = 48 is not a
    power of two, so the kernels' column masks are exercised."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(b, t, d, generator=gen, dtype=torch.float64).requires_grad_() for _ in range(n)]


def _haares_like_calls(e, b1, b_half, b2, scale, dtype):
    """Three router calls over one graph: a completed block (b1 and its detail rebuilt from b^(h)), a
    partial detail before the flip (b2 * scale, no b^(h)), e read by every call and twice by the last."""
    E, B1, BH, B2 = (x.to(dtype) for x in (e, b1, b_half, b2))
    S = scale.to(dtype)
    d1, d2 = (2 * BH - B1) * S, B2 * S
    return [
        ([E, B1, d1, B2, d2], [Detail(2, 1, BH, S), Detail(4, 3, None, S)], True),
        ([E, BH], [], False),
        ([E, B1, E], [], True),
    ]


def _router_inputs():
    """float64 leaves for `_haares_like_calls`: (e, b1, b_half, b2), scale (B, T, 1), three queries,
    gain, biases (5,)."""
    gen = torch.Generator().manual_seed(1)
    scale = torch.rand(2, 3, 1, generator=gen, dtype=torch.float64) + 0.5
    queries = [torch.randn(48, generator=gen, dtype=torch.float64).requires_grad_() for _ in range(3)]
    gain = (torch.rand(48, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    biases = torch.randn(5, generator=gen, dtype=torch.float64).requires_grad_()
    return _leaves(4), scale, queries, gain, biases


def _loss(route_fn, calls, queries, gain, biases):
    total = 0
    for k, ((values, details, with_bias), q) in enumerate(zip(calls, queries, strict=True)):
        bias = biases[: len(values)].to(values[0].dtype) if with_bias else None
        h = route_fn(values, q.to(values[0].dtype), gain.to(values[0].dtype), bias, 1e-6, details)
        up = torch.randn(h.shape, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
        total = total + (h.double() * up).sum()
    return total


@pytest.fixture(params=["two passes", "from the output"])
def centring(request, monkeypatch):
    """Both ways the backward kernel takes its softmax centring term: a first pass over the sources, or
    G . h from the forward's output (`CENTRE_FROM_OUTPUT_AT`: from 9 sources; here from 1 or never)."""
    monkeypatch.setattr(triton_router, "CENTRE_FROM_OUTPUT_AT", 1 if request.param == "from the output" else 99)
    return request.param


def test_kernels_match_the_float64_reference_with_recipes_and_shared_sources(kernel_calls, centring):
    (e, b1, b_half, b2), scale, queries, gain, biases = _router_inputs()
    inputs = [e, b1, b_half, b2, *queries, gain, biases]

    ref = torch.autograd.grad(_loss(route, _haares_like_calls(e, b1, b_half, b2, scale, torch.float64),
                                    queries, gain, biases), inputs)
    fused = FusedRoute(triton=True)
    got = torch.autograd.grad(_loss(fused, _haares_like_calls(e, b1, b_half, b2, scale, torch.float32),
                                    queries, gain, biases), inputs)
    assert kernel_calls == {"forward": 3, "backward": 3}, "the kernels did not take every call"
    for name, want, c in zip(["e", "b1", "b_half", "b2", "q1", "q2", "q3", "gain", "biases"], ref, got, strict=True):
        assert c.dtype == torch.float64  # the reference's leaves: fp32 copies' gradients flow back in fp64
        err = (c - want).abs().max() / want.abs().max()
        assert err < 1e-5, f"{name}: relative error {err:.2e} against float64 (the fp32 bar is 1e-5)"
    assert not fused._shared, "the running sums outlived their sources"


def test_kernels_match_the_reference_values():
    e, b1, b2 = _leaves(3, seed=3)
    gain = torch.ones(48, dtype=torch.float64)
    query = torch.randn(48, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    want = route([e, b1, b2], query, gain, None, 1e-6)
    got = FusedRoute(triton=True)([x.float() for x in (e, b1, b2)], query.float(), gain.float(), None, 1e-6)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-6)


def test_calls_the_kernels_do_not_take_fall_back_to_the_bodies(kernel_calls):
    """float64 sources, and a recipe whose base is not the slot before it, route through Inductor's bodies."""
    (a, b, c), query, gain = _leaves(3, seed=5), torch.randn(48, dtype=torch.float64), torch.ones(48, dtype=torch.float64)
    fused = FusedRoute(triton=True)
    got = fused([a, b, c], query, gain, None, 1e-6)
    odd = ((2, 0, False, False),)  # (slot, base, has_half, has_scale): rebuilt from slot 0, not 1
    assert not triton_router.supports([a, b, c], ()) and not triton_router.supports([x.float() for x in (a, b, c)], odd)
    assert triton_router.supports([x.float() for x in (a, b, c)], ())
    strided_half = torch.randn(48, 3, 2).permute(2, 1, 0)  # (2, 3, 48), not contiguous
    assert not triton_router.supports([x.float() for x in (a, b, c)], ((2, 1, True, False),), [strided_half])
    assert torch.allclose(got, route([a, b, c], query, gain, None, 1e-6), atol=1e-12)
    got.sum().backward()
    assert kernel_calls == {"forward": 0, "backward": 0}


@pytest.mark.parametrize(("residual", "router"), [("block_attnres", "triton"), ("haares", "triton"),
                                                  ("haares", "triton_virtual")])
def test_a_model_on_the_kernels_computes_the_reference_function(residual, router, kernel_calls):
    cfg = ModelConfig(d_model=32, d_ff=64, n_layers=4, n_heads=2, blocks=2, vocab_size=64, residual=residual)
    check = equivalence(cfg, device=torch.device("cpu"), fast=FastPath(router=router, compile=False, cuda_graph=False),
                        precision="fp32", batch_size=2, seq_len=16)
    assert kernel_calls["forward"] > 0 and kernel_calls["backward"] > 0
    assert check["logits_rel_err"] < 1e-5 and check["grads_rel_err"] < 1e-5


def test_the_triton_router_needs_cuda_outside_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(HaaresError, match="train.router=triton .* CUDA"):
        resolve_fast_path(TrainConfig(router="triton"), torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_fast_path(TrainConfig(router="triton"), torch.device("cpu")).router == "triton"


@pytest.mark.parametrize(("rows_per", "loop"), [(2, 3), (1, 4)])
def test_row_blocks_taken_in_a_loop_give_the_same_gradients(monkeypatch, rows_per, loop, kernel_calls):
    """BACKWARD_LOOP > 1 (several row blocks a program, fewer du partials), with a row count (2 x 7 = 14
    tokens) that leaves the last program's row blocks partly or wholly empty."""
    e, b1, b2 = _leaves(3, b=2, t=7, seed=6)
    gen = torch.Generator().manual_seed(7)
    query = torch.randn(48, generator=gen, dtype=torch.float64).requires_grad_()
    gain = (torch.rand(48, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    inputs = [e, b1, b2, query, gain]

    def grads():
        fused = FusedRoute(triton=True)
        h = fused([x.float() for x in (e, b1, b2)], query.float(), gain.float(), None, 1e-6)
        up = torch.randn(h.shape, generator=torch.Generator().manual_seed(8))
        return torch.autograd.grad((h * up).sum(), inputs)

    plain = grads()
    block_d = triton_router.triton.next_power_of_2(48)
    monkeypatch.setattr(triton_router, "_layout", lambda d: (block_d, rows_per, 1))
    monkeypatch.setattr(triton_router, "BACKWARD_LOOP", loop)
    looped = grads()
    assert kernel_calls == {"forward": 2, "backward": 2}
    for a, c in zip(plain, looped, strict=True):
        assert torch.allclose(a, c, rtol=1e-5, atol=1e-6)


def _virtual_calls(e, b1, b_half, b2, scale, dtype):
    """`_haares_like_calls` with the two details never materialised (None): their recipes are all."""
    calls = _haares_like_calls(e, b1, b_half, b2, scale, dtype)
    values, details, with_bias = calls[0]
    return [([v if m not in (2, 4) else None for m, v in enumerate(values)], details, with_bias), *calls[1:]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_virtual_details_send_their_gradients_to_base_and_half(dtype, kernel_calls, centring):
    """A detail given only as its recipe (HAARES on the kernels): its gradient reaches its base and
    its b^(h), as autograd through the materialised detail would (float64 reference). float32 runs
    on the kernels; float64 falls back to Inductor's bodies and folds the gradient in Python."""
    (e, b1, b_half, b2), scale, queries, gain, biases = _router_inputs()
    inputs = [e, b1, b_half, b2, *queries, gain, biases]
    ref = torch.autograd.grad(_loss(route, _haares_like_calls(e, b1, b_half, b2, scale, torch.float64),
                                    queries, gain, biases), inputs)
    fused = FusedRoute(triton=True, virtual_details=True)
    assert fused.rebuilds_details
    got = torch.autograd.grad(_loss(fused, _virtual_calls(e, b1, b_half, b2, scale, dtype), queries, gain, biases),
                              inputs)
    expected_calls = {"forward": 3, "backward": 3} if dtype == torch.float32 else {"forward": 0, "backward": 0}
    assert kernel_calls == expected_calls
    bar = 1e-5 if dtype == torch.float32 else 1e-10
    for name, want, c in zip(["e", "b1", "b_half", "b2", "q1", "q2", "q3", "gain", "biases"], ref, got, strict=True):
        err = (c - want).abs().max() / want.abs().max()
        assert err < bar, f"{name}: relative error {err:.2e}"


def test_haares_on_the_kernels_never_materialises_its_details(monkeypatch):
    """On triton_virtual HAARES's glue returns no d_hat and no RMS factor (routers rebuild the detail
    and compute its factor); on triton and the reference it returns both."""
    import haares.residual.haares as haares_module
    from haares.model import build_model
    from haares.residual.router import use_router

    made = []
    real = haares_module.next_sources

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        made.append(out[2] is not None or out[3] is not None)  # d_hat or its RMS factor
        return out

    monkeypatch.setattr(haares_module, "next_sources", spy)
    cfg = ModelConfig(d_model=32, d_ff=64, n_layers=4, n_heads=2, blocks=2, vocab_size=64, residual="haares")
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    losses = {}
    for router in ["reference", "triton", "triton_virtual"]:
        model = build_model(cfg, seed=0)
        use_router(model, router)
        made.clear()
        _, losses[router] = model(idx, idx)
        losses[router].backward()
        assert made, "next_sources was not called"
        assert not any(made) if router == "triton_virtual" else all(made)
    assert torch.allclose(losses["reference"], losses["triton_virtual"], rtol=1e-6)


@pytest.mark.parametrize("with_half", [False, True])
def test_the_forward_kernel_fills_a_detail_scale_as_rms_scale_computes_it(with_half, kernel_calls):
    """A recipe with `fill` (HAARES on triton_virtual): the forward kernel writes Eq. 7's factor of the
    rebuilt detail against its base into the empty buffer, within fp32 rounding of `rms_scale`, and
    routes with it as with the materialised detail; a max_scale below some factors clamps them."""
    from haares.residual.recipes import rms_scale

    e, x, y = (t.detach().float() for t in _leaves(3, seed=9))
    base, half = 3 * x, 1.5 * x + 0.5 * y  # with b^(h), the detail is y: factors about 3
    raw = (2 * half - base) if with_half else base
    for max_scale in (10.0, 1.5):
        want = rms_scale(raw, base, eps=1e-6, max_scale=max_scale)
        scale = torch.full_like(want, float("nan"))
        recipe = Detail(2, 1, half if with_half else None, scale, fill=(1e-6, max_scale))
        query = torch.randn(48, generator=torch.Generator().manual_seed(10))
        got = FusedRoute(triton=True, virtual_details=True)([e, base, None], query, torch.ones(48), None, 1e-6, [recipe])
        assert torch.allclose(scale, want, rtol=1e-6, atol=0)
        if with_half:  # (without, the detail is its base: factors 1 - 1e-6)
            assert (max_scale == 10.0) == bool((want < max_scale).all()), "the clamp was not exercised"
        assert torch.allclose(got, route([e, base, raw * want], query, torch.ones(48), None, 1e-6), rtol=1e-5, atol=1e-6)
    assert kernel_calls["forward"] == 2
