"""torch.compile for the small pure functions of the fast path, with a scoped recompile limit.

Why scoped: the fused router's bodies are specialised per source count M (1 to 2N+1, up to 17 at
N = 8), more graphs than dynamo's default limit of 8. Raising the limit only around these calls
leaves the process-wide setting untouched for everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

RECOMPILE_LIMIT = 64


class CompiledFn:
    """`torch.compile(fn, dynamic=False)`, called with dynamo's recompile limit raised to RECOMPILE_LIMIT."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.compiled = torch.compile(fn, dynamic=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            return self.compiled(*args, **kwargs)
