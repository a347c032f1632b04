"""The fast router: the same function as `router.route`, with a hand-written backward.

Why: the reference `route` stacks the M sources into a new (M, B, T, D) tensor and autograd keeps
that stack and the normalised keys alive for backward, at every one of the 2L routers. That is most
of HAARES's memory overhead over Block AttnRes (and a good part of its time). Here the forward
saves only per-token scalars (routing weights, inverse RMS, raw dot products; (M, B, T) each) and
the backward recomputes from the sources, which the graph holds anyway. Both bodies loop over the
sources instead of stacking them, so a compiled body reads each source in place.

Algebra (per token; u = w * rho, r_m = rsqrt(mean_d v_m^2 + eps), s_m = u . v_m):
    logit_m = r_m s_m + beta_m,   a = softmax_m(logit),   h = sum_m a_m v_m
    backward, with G = dL/dh:  da_m = G . v_m,  dl_m = a_m (da_m - sum_k a_k da_k)
    dv_m = a_m G + dl_m (r_m u - s_m r_m^3 v_m / D),  du = sum_{m,b,t} dl_m r_m v_m,  dbeta_m = sum_{b,t} dl_m
Sources given with a `Detail` recipe (HAARES's half-split details) are not saved at all: the
backward rebuilds each from b partials the router saves anyway, inside the backward body, so a
compiled backward reads b^(h) where it would have read the detail: no extra traffic, one
(B, T, D) tensor less held per detail until backward.
`FusedRoute(compiled=True)` compiles the two bodies with torch.compile (one graph per source count,
small and quick to build): the CUDA fast path's choice. `route_fused` runs them eagerly, which is
what the CPU tests exercise.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from haares.residual.compiled import CompiledFn


def _forward(values: list[torch.Tensor], u: torch.Tensor, biases: torch.Tensor, eps: float):
    # One pass per source, no (M, B, T, D) stack: compiled, this is a single kernel that reads each
    # source row once for the statistics and once for the weighted sum.
    vs = [v.to(u.dtype) for v in values]
    r = [torch.rsqrt(v.pow(2).mean(-1) + eps) for v in vs]  # M x (B, T)
    s = [(v * u).sum(-1) for v in vs]  # M x (B, T); elementwise + sum fuses, a matmul would not
    logits = [r_m * s_m + biases[m] for m, (r_m, s_m) in enumerate(zip(r, s, strict=True))]
    top = functools.reduce(torch.maximum, logits)
    exps = [(lg - top).exp() for lg in logits]
    total = functools.reduce(torch.add, exps)
    a = [e / total for e in exps]  # softmax over sources, M x (B, T)
    h = functools.reduce(torch.add, [a_m.unsqueeze(-1) * v for a_m, v in zip(a, vs, strict=True)])
    return h, torch.stack(a), torch.stack(r), torch.stack(s)


def _rebuild(values: list, recipes: tuple, extras: list) -> list[torch.Tensor]:
    """Fill the None slots of `values` from their recipes ((slot, base, has_half, has_scale) each,
    their halves and scales in order in `extras`): (base or 2 * half - base) * scale, as in next_sources."""
    values, extras = list(values), list(extras)
    for slot, base, has_half, has_scale in recipes:
        v = 2 * extras.pop(0) - values[base] if has_half else values[base]
        values[slot] = v * extras.pop(0) if has_scale else v
    return values


def _backward(values: list, u: torch.Tensor, G: torch.Tensor, a, r, s, recipes: tuple = (), extras: list = ()):
    values = _rebuild(values, recipes, extras)
    vs = [v.to(u.dtype) for v in values]
    G = G.to(u.dtype)
    D = G.shape[-1]
    da = [(v * G).sum(-1) for v in vs]  # M x (B, T)
    mean_da = functools.reduce(torch.add, [a[m] * da[m] for m in range(len(vs))])
    dl = [a[m] * (da[m] - mean_da) for m in range(len(vs))]  # d loss / d logit_m
    dV = [  # cast inside the body, so a compiled backward writes each gradient once, in its dtype
        (
            a[m].unsqueeze(-1) * G
            + (dl[m] * r[m]).unsqueeze(-1) * u
            - (dl[m] * s[m] * r[m].pow(3) / D).unsqueeze(-1) * vs[m]
        ).to(values[m].dtype)
        for m in range(len(vs))
    ]
    du = functools.reduce(torch.add, [((dl[m] * r[m]).unsqueeze(-1) * vs[m]).sum(dim=(0, 1)) for m in range(len(vs))])
    dbias = torch.stack([dl_m.sum() for dl_m in dl])  # (M,)
    return dV, du, dbias


class _FusedRoute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, bodies, recipes, extras, query, gain, biases, eps, *values):
        forward_body, backward_body = bodies
        # Accumulate in fp32 at least (fp64 stays fp64, for gradcheck).
        acc = functools.reduce(torch.promote_types, (v.dtype for v in values), torch.float32)
        u = (query * gain).to(acc)
        h, a, r, s = forward_body(list(values), u, biases.to(acc), eps)
        ctx.backward_body, ctx.recipes, ctx.n_values = backward_body, recipes, len(values)
        rebuilt = {slot for slot, *_ in recipes}
        kept = [None if m in rebuilt else v for m, v in enumerate(values)]
        ctx.save_for_backward(query, gain, a, r, s, *kept, *extras)
        # Same dtype as the reference: the promotion of the sources (fp32 once the embedding is one).
        return h.to(functools.reduce(torch.promote_types, (v.dtype for v in values)))

    @staticmethod
    def backward(ctx, G):
        query, gain, a, r, s, *saved = ctx.saved_tensors
        values, extras = saved[: ctx.n_values], saved[ctx.n_values :]
        u = (query * gain).to(a.dtype)
        dV, du, dbias = ctx.backward_body(list(values), u, G, a, r, s, ctx.recipes, list(extras))
        dq = (du * gain.to(du.dtype)).to(query.dtype)
        dg = (du * query.to(du.dtype)).to(gain.dtype)
        return (None, None, None, dq, dg, dbias, None, *dV)


class FusedRoute:
    """`route_fused` with its two bodies eager (`compiled=False`) or torch.compile'd (CUDA fast path).

    Each instance owns its compiled bodies, so nothing is cached at module level.
    """

    def __init__(self, *, compiled: bool = False) -> None:
        self.compiled = compiled
        self.bodies = (CompiledFn(_forward), CompiledFn(_backward)) if compiled else (_forward, _backward)

    def __call__(
        self,
        values: torch.Tensor | Sequence[torch.Tensor],
        query: torch.Tensor,
        key_gain: torch.Tensor,
        biases: torch.Tensor | None,
        eps: float,
        details: Sequence = (),
    ) -> torch.Tensor:
        """Same arguments and result as `router.route`: values (M, B, T, D) or M x (B, T, D); query,
        key_gain (D,); biases (M,) or None; details: `Detail` recipes of sources to rebuild in
        backward instead of saving. Returns (B, T, D)."""
        vals = list(values.unbind(0)) if isinstance(values, torch.Tensor) else list(values)
        if biases is None:
            biases = torch.zeros(len(vals), device=vals[0].device, dtype=torch.float32)
        recipes = tuple((dt.slot, dt.base, dt.half is not None, dt.scale is not None) for dt in details)
        extras = [t for dt in details for t in (dt.half, dt.scale) if t is not None]
        return _FusedRoute.apply(self.bodies, recipes, extras, query, key_gain, biases, eps, *vals)


# Drop-in for `router.route` (same arguments, same result up to rounding), O(M*B*T) saved memory;
# the bodies run eagerly (the CPU path the tests exercise).
route_fused = FusedRoute(compiled=False)
