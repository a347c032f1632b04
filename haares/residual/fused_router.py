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
A source read by several routers (the embedding, every completed block sum and detail) keeps one
running gradient sum: each router's backward adds its gradient to it in the pass that computes it,
and a 0-d token in the graph (`_Shared`) hands the sum to the source after the last such router, so
autograd never adds per-router gradients in passes of their own.
`FusedRoute(compiled=True)` compiles the two bodies with torch.compile (one graph per source
pattern); `FusedRoute(triton=True)` runs them as the hand-written kernels of `triton_router` (one
pass over the sources forward, one kernel backward), the CUDA fast path's choice, with the compiled
bodies for calls the kernels do not take. `route_fused` runs the bodies eagerly, which is what most
CPU tests exercise (the kernels' tests run them in Triton's interpreter).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence

import torch

from haares.residual.compiled import CompiledFn
from haares.residual.recipes import rms_scale, unpack_recipes, without_fills


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
    """Fill the recipe slots of `values` from their recipes: (base or 2 * half - base) * scale, as in
    next_sources. A recipe that asks for it (`Detail.fill`, forward only) first gets its scale written:
    Eq. 7's factor of the unscaled detail against its base, by `rms_scale` itself, so bit for bit what
    next_sources would have computed (the kernels compute it in the pass that rebuilds the detail)."""
    values = list(values)
    for slot, base, half, scale, fill in unpack_recipes(recipes, extras):
        v = 2 * half - values[base] if half is not None else values[base]
        if fill is not None:
            scale.copy_(rms_scale(v, values[base], eps=fill[0], max_scale=fill[1]))
        values[slot] = v * scale if scale is not None else v
    return values


def _fold(dV: list, recipes: tuple, extras: list, virtual: list, half_sums: list) -> list:
    """Send each virtual detail slot's gradient to what the detail is made of, as autograd through
    next_sources would: d_hat = (base or 2 * half - base) * sg(scale), so base gets +-scale * g and
    b^(h) gets 2 * scale * g (added to its running sum). Sets dV[slot] to None; returns the halves'
    new running sums, per slot (None where there is none)."""
    half_grads: list = [None] * len(dV)
    for slot, base, half, scale, _fill in unpack_recipes(recipes, extras):
        if not virtual[slot]:
            continue
        g = dV[slot] if scale is None else dV[slot] * scale
        if half is None:
            dV[base] = dV[base] + g
        else:
            dV[base] = dV[base] - g
            half_grads[slot] = 2 * g if half_sums[slot] is None else half_sums[slot] + 2 * g
        dV[slot] = None
    return half_grads


def _backward(values: list, u: torch.Tensor, G: torch.Tensor, a, r, s, recipes: tuple, extras: list, sums: list):
    """dV (each source's gradient, plus its running sum from later routers where `sums` has one), w
    (B, T, D) whose token sum is du, dbias (M,)."""
    values = _rebuild(values, recipes, extras)
    vs = [v.to(u.dtype) for v in values]
    G = G.to(u.dtype)
    D = G.shape[-1]
    da = [(v * G).sum(-1) for v in vs]  # M x (B, T)
    mean_da = functools.reduce(torch.add, [a[m] * da[m] for m in range(len(vs))])
    dl = [a[m] * (da[m] - mean_da) for m in range(len(vs))]  # d loss / d logit_m
    dV = []
    for m in range(len(vs)):
        grad = (
            a[m].unsqueeze(-1) * G
            + (dl[m] * r[m]).unsqueeze(-1) * u
            - (dl[m] * s[m] * r[m].pow(3) / D).unsqueeze(-1) * vs[m]
        )
        if sums[m] is not None:  # add in the pass that forms it: no separate accumulation pass
            grad = grad + sums[m].to(grad.dtype)
        dV.append(grad.to(values[m].dtype))  # cast inside the body: each gradient written once, in its dtype
    # du = sum over tokens of w: w is formed row by row in the pass that writes dV (which reads every
    # source anyway) and summed over tokens by the caller, outside the compiled body: summed inside,
    # the compiler would fuse w into a column reduction that reads all M sources a second time.
    w = functools.reduce(torch.add, [(dl[m] * r[m]).unsqueeze(-1) * vs[m] for m in range(len(vs))])  # (B, T, D)
    dbias = torch.stack([dl_m.sum() for dl_m in dl])  # (M,)
    return dV, w, dbias


class GradientSum:
    """The running gradient of one source over the routers that read it (in backward order)."""

    __slots__ = ("grad",)

    def __init__(self) -> None:
        self.grad: torch.Tensor | None = None


class _Shared(torch.autograd.Function):
    """A 0-d token standing for a routed source in the graph; its backward hands the source the sum
    of every router's gradient for it.

    Why: autograd would take each router's gradient for a source as a new tensor and add it into
    the source's buffer in a pass of its own (write, then read both, write): for the embedding and
    the block sums, read by up to 2L routers each, that is most of the backward's traffic. Routers
    instead add their gradient to the running sum inside the pass that computes it, and the token
    makes autograd run this backward only after every router that read the source.
    """

    @staticmethod
    def forward(ctx, total, source):
        ctx.total = total
        return source.new_zeros(())

    @staticmethod
    def backward(ctx, _unused):
        grad, ctx.total.grad = ctx.total.grad, None
        return None, grad


class InductorBodies:
    """`_forward` / `_backward` eagerly (the CPU path) or torch.compile'd (one graph per source pattern)."""

    def __init__(self, *, compiled: bool) -> None:
        self.forward_body = CompiledFn(_forward) if compiled else _forward
        self.backward_body = CompiledFn(_backward) if compiled else _backward

    def forward(self, values, u, biases, eps, recipes, extras):
        """-> h (B, T, D), the tensors to save (a, r, s; (M, B, T) each), a tag for backward (None).
        Virtual slots (None) are built from their recipes first, and recipes that ask for it get their
        scales filled."""
        if any(v is None for v in values) or any(fill is not None for *_, fill in recipes):
            values = _rebuild(values, recipes, extras)
        h, a, r, s = self.forward_body(values, u, biases, eps)
        return h, (a, r, s), None

    def backward(self, tag, values, dtypes, u, G, saved, recipes, extras, sums, virtual, half_sums):
        """-> dV (M x (B, T, D), in their sources' dtypes, running sums added; None for virtual slots),
        du (D,), dbias (M,), the virtual slots' b^(h) running sums (see `_fold`)."""
        dV, w, dbias = self.backward_body(values, u, G, *saved, recipes, extras, sums)
        dV = list(dV)
        half_grads = _fold(dV, recipes, extras, virtual, half_sums) if any(virtual) else [None] * len(dV)
        # du = sum over tokens of w, outside the compiled body: summed inside, the compiler would fuse w
        # into a column reduction that reads all M sources a second time.
        return dV, w.sum(dim=(0, 1)), dbias, half_grads


class TritonBodies:
    """`triton_router`'s hand-written kernels where they take the call (tag True), else `fallback`'s."""

    def __init__(self, fallback: InductorBodies) -> None:
        from haares.residual import triton_router

        self.kernels, self.fallback = triton_router, fallback

    def forward(self, values, u, biases, eps, recipes, extras):
        if not self.kernels.supports(values, recipes, extras):
            h, saved, _ = self.fallback.forward(values, u, biases, eps, recipes, extras)
            return h, saved, False
        h, saved = self.kernels.forward(values, u, biases, eps, recipes, extras)
        return h, saved, True

    def backward(self, tag, *args):
        return self.kernels.backward(*args) if tag else self.fallback.backward(None, *args)


def _bias_gradient(total: GradientSum | None, dbias: torch.Tensor, n_biases: int) -> torch.Tensor | None:
    """This call's dbias (M,) for a bias table of n_biases >= M entries: added into the table's running
    sum where it has one (returns None: the table's token hands the sum over), else zero-padded to n_biases."""
    if total is None:
        return torch.nn.functional.pad(dbias, (0, n_biases - len(dbias)))
    if total.grad is None:
        total.grad = dbias.new_zeros(n_biases)
    total.grad[: len(dbias)] += dbias  # the sum is this instance's own until the token hands it over
    return None


class _FusedRoute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, bodies, recipes, extras, totals, half_totals, bias_total, values, query, gain, biases, eps,
                *tokens):
        # A virtual slot (None: a detail that was never materialised) has its base's dtype.
        bases = {slot: base for slot, base, *_ in recipes}
        dtypes = [v.dtype if v is not None else values[bases[m]].dtype for m, v in enumerate(values)]
        # Accumulate in fp32 at least (fp64 stays fp64, for gradcheck).
        acc = functools.reduce(torch.promote_types, dtypes, torch.float32)
        u = (query * gain).to(acc)
        h, saved, tag = bodies.forward(list(values), u, biases[: len(values)].to(acc), eps, recipes, list(extras))
        # Backward reads the scales forward filled.
        ctx.bodies, ctx.tag, ctx.recipes = bodies, tag, without_fills(recipes)
        ctx.totals, ctx.half_totals, ctx.bias_total, ctx.n_biases = totals, half_totals, bias_total, len(biases)
        ctx.dtypes, ctx.acc, ctx.n_values, ctx.n_saved = dtypes, acc, len(values), len(saved)
        ctx.virtual = [v is None for v in values]
        ctx.n_tokens = len(tokens)
        kept = [None if m in bases else v for m, v in enumerate(values)]
        ctx.save_for_backward(query, gain, *saved, *kept, *extras)
        # Same dtype as the reference: the promotion of the sources (fp32 once the embedding is one).
        return h.to(functools.reduce(torch.promote_types, dtypes))

    @staticmethod
    def backward(ctx, G):
        query, gain, *rest = ctx.saved_tensors
        saved, rest = rest[: ctx.n_saved], rest[ctx.n_saved :]
        values, extras = rest[: ctx.n_values], rest[ctx.n_values :]
        u = (query * gain).to(ctx.acc)
        # A source routed twice by this router (an ablation's copy of b) takes its running sum once.
        first = {}
        for m, total in enumerate(ctx.totals):
            if total is not None:
                first.setdefault(id(total), m)
        sums = [t.grad if t is not None and first[id(t)] == m else None for m, t in enumerate(ctx.totals)]
        half_sums = [t.grad if t is not None else None for t in ctx.half_totals]
        dV, du, dbias, half_grads = ctx.bodies.backward(ctx.tag, list(values), ctx.dtypes, u, G, saved, ctx.recipes,
                                                        list(extras), sums, ctx.virtual, half_sums)
        for m, total in enumerate(ctx.totals):
            if total is not None:
                total.grad = dV[m] if first[id(total)] == m else total.grad + dV[m]
        for half_total, grad in zip(ctx.half_totals, half_grads, strict=True):
            if half_total is not None:  # a virtual detail's b^(h): its running sum, this router's part added
                half_total.grad = grad
        dbias = _bias_gradient(ctx.bias_total, dbias, ctx.n_biases)
        dq = (du * gain.to(du.dtype)).to(query.dtype)
        dg = (du * query.to(du.dtype)).to(gain.dtype)
        # The sources' gradients went to their running sums; the tokens take none.
        return (None, None, None, None, None, None, None, dq, dg, dbias, None, *([None] * ctx.n_tokens))


class FusedRoute:
    """`route_fused` with its two bodies eager (`compiled=False`), torch.compile'd (`compiled=True`), or
    as Triton kernels (`triton=True`; the compiled or eager bodies where the kernels do not apply).

    Each instance owns its bodies and the running gradient sums of the sources its routers read
    (`_Shared`), keyed by tensor identity and dropped with the tensor; nothing is cached at module
    level.
    """

    def __init__(self, *, compiled: bool = False, triton: bool = False, virtual_details: bool = False) -> None:
        self.compiled, self.triton = compiled, triton
        # virtual_details: HAARES need not materialise its half-split details (None in `values`): the
        # kernels rebuild each from its recipe in both directions and send its gradient to b and b^(h)
        # themselves (Inductor's bodies, where the kernels do not take a call, fold it in Python). Off
        # here; train.router=triton_virtual (auto's choice on CUDA, fastpath.py) turns it on.
        self.rebuilds_details = virtual_details
        inductor = InductorBodies(compiled=compiled)
        self.bodies = TritonBodies(inductor) if triton else inductor
        self._shared: dict[int, tuple[weakref.ref, GradientSum, torch.Tensor]] = {}

    def _token(self, source: torch.Tensor) -> tuple[GradientSum | None, torch.Tensor | None]:
        """The source's running gradient sum and graph token, made at the first router that reads it."""
        if source is None or not (source.requires_grad and torch.is_grad_enabled()):
            return None, None
        key = id(source)
        entry = self._shared.get(key)
        if entry is None or entry[0]() is not source:
            total = GradientSum()
            ref = weakref.ref(source, lambda _ref, key=key, shared=self._shared: shared.pop(key, None))
            entry = self._shared[key] = (ref, total, _Shared.apply(total, source))
        return entry[1], entry[2]

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
        key_gain (D,); biases (M,), a longer table whose first M entries are this call's, or None;
        details: `Detail` recipes of sources to rebuild in backward instead of saving. Returns (B, T, D).
        A bias table shared by many routers (HAARES's) keeps one running gradient sum, as a shared
        source does: each router adds its dbias into it, so autograd adds nothing per router."""
        vals = list(values.unbind(0)) if isinstance(values, torch.Tensor) else list(values)
        if biases is None:
            biases = torch.zeros(len(vals), device=vals[0].device, dtype=torch.float32)
        if any(dt.fill is not None and dt.scale is None for dt in details):
            raise ValueError("a Detail with fill needs its scale buffer")
        recipes = tuple((dt.slot, dt.base, dt.half is not None, dt.scale is not None, dt.fill) for dt in details)
        extras = [t for dt in details for t in (dt.half, dt.scale) if t is not None]
        totals, tokens = zip(*(self._token(v) for v in vals), strict=True)
        # A virtual detail's gradient goes to its b^(h) through b^(h)'s running sum, so this router
        # takes b^(h)'s token too (autograd then hands that sum over only after this router's backward).
        halves = [None] * len(vals)
        for dt in details:
            if vals[dt.slot] is None and dt.half is not None:
                halves[dt.slot] = dt.half
        if any(h is not None and (any(h is v for v in vals) or sum(h is g for g in halves) > 1) for h in halves):
            raise ValueError("a virtual detail's b^(h) may not be a source of the same router, nor another's b^(h)")
        half_totals, half_tokens = zip(*(self._token(h) for h in halves), strict=True)
        if len(biases) < len(vals):
            raise ValueError(f"{len(vals)} sources need at least {len(vals)} biases, got {len(biases)}")
        bias_total, bias_token = self._token(biases)
        return _FusedRoute.apply(self.bodies, recipes, extras, totals, half_totals, bias_total, vals, query, key_gain,
                                 biases, eps, *(t for t in (*tokens, *half_tokens, bias_token) if t is not None))


# Drop-in for `router.route` (same arguments, same result up to rounding), O(M*B*T) saved memory;
# the bodies run eagerly (the CPU path the tests exercise).
route_fused = FusedRoute(compiled=False)
