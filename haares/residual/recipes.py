"""Detail recipes as the fused router's bodies take them: shared by its Inductor bodies and its
Triton kernels (`fused_router`, `triton_router`), neither of which imports the other at load time."""

from __future__ import annotations


def unpack_recipes(recipes: tuple, extras) -> list[tuple]:
    """(slot, base, half or None, scale or None) per recipe: recipes are (slot, base, has_half,
    has_scale), their halves and scales in order in `extras`."""
    extras, unpacked = list(extras), []
    for slot, base, has_half, has_scale in recipes:
        half = extras.pop(0) if has_half else None
        unpacked.append((slot, base, half, extras.pop(0) if has_scale else None))
    return unpacked
