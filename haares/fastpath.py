"""The fast path: which implementation trains a run (router, compilation, CUDA graph), decided once.

Same function, other implementation. `TrainConfig` holds the user's (or grid's) choice, "auto" by
default; `resolve_fast_path` turns it into what runs on a device (on CUDA: fused router on Triton kernels, compiled
sublayers and glue, the whole step in one CUDA graph; on the CPU: the plain reference code, which
the golden traces pin); `apply_fast_path` sets a model up. The trainer and `haares bench` both go
through here, and each run's summary records the resolved choice.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from haares.config import TrainConfig
from haares.errors import HaaresError
from haares.residual.router import use_router


@dataclass(frozen=True)
class FastPath:
    """What trains a run on its device."""

    router: str
    """reference, fused (Inductor's bodies), triton (hand-written kernels) or triton_virtual (the
    kernels, and HAARES's half-split details never materialised: the kernels rebuild them and send
    their gradients to b and b^(h); auto's choice on CUDA)."""
    compile: bool
    """Sublayers, fused-router bodies and routing glue torch.compile'd."""
    cuda_graph: bool
    """The whole training step replayed from one CUDA graph."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TRITON_MIN = (3, 3)
"""The kernels take their sources as a tuple of tensors, which older Triton releases cannot pass."""


def triton_version() -> tuple[int, int] | None:
    """(major, minor) of the installed triton, or None where there is none (read from its metadata,
    without importing it)."""
    if importlib.util.find_spec("triton") is None:
        return None
    try:
        major, minor = importlib.metadata.version("triton").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def _triton_ready() -> bool:
    return (triton_version() or (0, 0)) >= TRITON_MIN


def _cuda_router() -> str:
    """Auto's router on CUDA: the Triton kernels with HAARES's details never materialised (measured
    faster than the kernels with them, which were faster than Inductor's bodies for both routed schemes,
    docs/performance.md; Block AttnRes has no details, so the two are the same code for it), or
    Inductor's bodies where triton is missing or too old."""
    return "triton_virtual" if _triton_ready() else "fused"


def resolve_fast_path(train: TrainConfig, device: torch.device) -> FastPath:
    """Resolve "auto" (router) and None (compile, cuda_graph) for `device`; explicit values win."""
    on_cuda = device.type == "cuda"
    router = train.router if train.router != "auto" else (_cuda_router() if on_cuda else "reference")
    compiled = train.compile if train.compile is not None else on_cuda
    # Muon's step has no host sync (constant lr, no .item()), so it should capture, but it has not yet
    # been checked against its eager step on a GPU (benchmarks/graph_check.py does that): until then
    # auto leaves Muon's steps eager; train.cuda_graph=true captures them anyway.
    graph = train.cuda_graph if train.cuda_graph is not None else on_cuda and train.optimizer == "adamw"
    if router.startswith("triton") and not (on_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        raise HaaresError(
            f"train.router={router} runs Triton kernels, which need a CUDA device, not {device.type}; "
            "use train.router=fused or auto (TRITON_INTERPRET=1 runs them on the CPU, slowly, for tests)"
        )
    if router.startswith("triton") and not _triton_ready():
        raise HaaresError(
            f"train.router={router} needs triton >= {'.'.join(map(str, TRITON_MIN))} (installed: "
            f"{'.'.join(map(str, triton_version() or ())) or 'none'}); pip install -U triton, or use train.router=fused"
        )
    if graph and not on_cuda:
        raise HaaresError(
            f"train.cuda_graph=true needs a CUDA device, not {device.type}; "
            "leave it unset (auto) or set train.cuda_graph=false"
        )
    return FastPath(router=router, compile=compiled, cuda_graph=graph)


def apply_fast_path(model: nn.Module, fast: FastPath) -> None:
    """Route with `fast.router`; with `fast.compile`, compile each sublayer and the scheme's glue.

    Sublayers are compiled one by one (in place, so state_dict keys and checkpoints are unchanged):
    all attention sublayers share one graph and all MLP sublayers another, so compile time stays
    flat in depth, where compiling the unrolled model grows with it.
    """
    use_router(model, fast.router, compiled=fast.compile and fast.router != "reference")
    if fast.compile:
        for sublayer in model.sublayers:
            sublayer.compile(dynamic=False)
        model.residual.compile_glue()


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """TF32 off for "fp32" (the paper's true fp32), on for "bf16"; the previous flags restored after."""
    previous = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    allow = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def autocast(precision: str, device: torch.device, *, cuda_graph: bool = False) -> contextlib.AbstractContextManager:
    """bf16 autocast for "bf16", nothing for "fp32".

    Inside a CUDA graph the autocast weight cache must be off (PyTorch's CUDA-graph rules): a cached
    cast made during capture would be freed memory at replay.
    """
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=not cuda_graph)
    return contextlib.nullcontext()
