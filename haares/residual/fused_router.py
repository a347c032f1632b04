"""The fast router: the same function as `router.route`, with a hand-written backward.

Why: the reference `route` stacks the M sources into a new (M, B, T, D) tensor and autograd keeps
that stack and the normalised keys alive for backward, at every one of the 2L routers. That is most
of HAARES's memory overhead over Block AttnRes (and a good part of its time). Here the forward
saves only per-token scalars (routing weights, inverse RMS, raw dot products; (M, B, T) each) and
the backward recomputes from the sources, which the graph holds anyway.

Algebra (per token; u = w * rho, r_m = rsqrt(mean_d v_m^2 + eps), s_m = u . v_m):
    logit_m = r_m s_m + beta_m,   a = softmax_m(logit),   h = sum_m a_m v_m
    backward, with G = dL/dh:  da_m = G . v_m,  dl_m = a_m (da_m - sum_k a_k da_k)
    dv_m = a_m G + dl_m (r_m u - s_m r_m^3 v_m / D),  du = sum_{m,b,t} dl_m r_m v_m,  dbeta_m = sum_{b,t} dl_m
On CUDA the two bodies are compiled with torch.compile (one graph per source count, small and
quick to build); on the CPU they run eagerly, which the tests exercise.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch


def _forward(values: list[torch.Tensor], u: torch.Tensor, biases: torch.Tensor, eps: float):
    V = torch.stack([v.to(u.dtype) for v in values], 0)  # (M, B, T, D), temporary
    r = torch.rsqrt(V.pow(2).mean(-1) + eps)  # (M, B, T)
    s = V @ u  # (M, B, T)
    a = (r * s + biases.view(-1, 1, 1)).softmax(0)  # (M, B, T)
    h = (a.unsqueeze(-1) * V).sum(0)  # (B, T, D)
    return h, a, r, s


def _backward(values: list[torch.Tensor], u: torch.Tensor, G: torch.Tensor, a, r, s):
    V = torch.stack([v.to(u.dtype) for v in values], 0)  # (M, B, T, D), temporary
    G = G.to(u.dtype)
    da = (V * G).sum(-1)  # (M, B, T)
    dl = a * (da - (a * da).sum(0, keepdim=True))  # (M, B, T)
    D = V.shape[-1]
    coef_v = dl * s * r.pow(3) / D  # (M, B, T)
    dV = a.unsqueeze(-1) * G + (dl * r).unsqueeze(-1) * u - coef_v.unsqueeze(-1) * V
    du = ((dl * r).unsqueeze(-1) * V).sum(dim=(0, 1, 2))  # (D,)
    dbias = dl.sum(dim=(1, 2))  # (M,)
    return dV, du, dbias


_compiled: dict[str, object] = {}


def _impl(name: str, device: torch.device):
    """The eager body on the CPU, a compiled one on CUDA (built once per process)."""
    fn = {"forward": _forward, "backward": _backward}[name]
    if device.type != "cuda":
        return fn
    if name not in _compiled:
        # One graph per source count M (1 to 2N+1, up to 17 at N = 8): lift dynamo's default limit of 8.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        _compiled[name] = torch.compile(fn, dynamic=False)
    return _compiled[name]


class _FusedRoute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, gain, biases, eps, *values):
        # Accumulate in fp32 at least (fp64 stays fp64, for gradcheck).
        acc = functools.reduce(torch.promote_types, (v.dtype for v in values), torch.float32)
        u = (query * gain).to(acc)
        h, a, r, s = _impl("forward", values[0].device)(list(values), u, biases.to(acc), eps)
        ctx.save_for_backward(query, gain, a, r, s, *values)
        # Same dtype as the reference: the promotion of the sources (fp32 once the embedding is one).
        return h.to(functools.reduce(torch.promote_types, (v.dtype for v in values)))

    @staticmethod
    def backward(ctx, G):
        query, gain, a, r, s, *values = ctx.saved_tensors
        u = (query * gain).to(a.dtype)
        dV, du, dbias = _impl("backward", G.device)(list(values), u, G, a, r, s)
        grads_v = [g.to(v.dtype) for g, v in zip(dV.unbind(0), values, strict=True)]
        dq = (du * gain.to(du.dtype)).to(query.dtype)
        dg = (du * query.to(du.dtype)).to(gain.dtype)
        return (dq, dg, dbias, None, *grads_v)


def route_fused(
    values: torch.Tensor | Sequence[torch.Tensor],
    query: torch.Tensor,
    key_gain: torch.Tensor,
    biases: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """Drop-in for `router.route` (same arguments, same result up to rounding), O(M*B*T) saved memory.

    values: (M, B, T, D) or a list of M (B, T, D) tensors; query, key_gain: (D,); biases: (M,) or None.
    returns (B, T, D).
    """
    vals = list(values.unbind(0)) if isinstance(values, torch.Tensor) else list(values)
    if biases is None:
        biases = torch.zeros(len(vals), device=vals[0].device, dtype=torch.float32)
    return _FusedRoute.apply(query, key_gain, biases, eps, *vals)
