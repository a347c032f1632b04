"""Detail recipes as the fused router's bodies take them, and Eq. 7's RMS factor they may fill: shared
by HAARES's glue, the fused router's Inductor bodies and its Triton kernels (`haares`, `fused_router`,
`triton_router`), none of which imports another at load time."""

from __future__ import annotations

import torch


def rms(z: torch.Tensor) -> torch.Tensor:
    """Per-token RMS over the hidden dim: (..., D) -> (..., 1)."""
    return z.pow(2).mean(-1, keepdim=True).sqrt()


def rms_scale(d: torch.Tensor, b: torch.Tensor, *, eps: float, max_scale: float) -> torch.Tensor:
    """Eq. 7's factor sg(min(rms(b) / (rms(d) + eps), max_scale)), per token: (B, T, D) -> (B, T, 1).

    Computed without autograd: under a bare .detach() eager autograd would still save d and b for
    the pow() whose gradient nothing asks for.
    """
    with torch.no_grad():
        return (rms(b) / (rms(d) + eps)).clamp(max=max_scale)


def rms_match(d: torch.Tensor, b: torch.Tensor, *, eps: float, max_scale: float) -> torch.Tensor:
    """Eq. 7: d_hat = d * sg(min(rms(b) / (rms(d) + eps), max_scale)), per token; (B, T, D) -> (B, T, D).

    The stop-gradient covers the whole factor, so gradient reaches d only through the product.
    """
    return d * rms_scale(d, b, eps=eps, max_scale=max_scale)


def unpack_recipes(recipes: tuple, extras) -> list[tuple]:
    """(slot, base, half or None, scale or None, fill or None) per recipe: recipes are (slot, base,
    has_half, has_scale, fill), their halves and scales in order in `extras`; fill is `Detail.fill`."""
    extras, unpacked = list(extras), []
    for slot, base, has_half, has_scale, fill in recipes:
        half = extras.pop(0) if has_half else None
        unpacked.append((slot, base, half, extras.pop(0) if has_scale else None, fill))
    return unpacked


def without_fills(recipes: tuple) -> tuple:
    """The recipes once their scales are filled: what backward takes."""
    return tuple((*recipe[:4], None) for recipe in recipes)
