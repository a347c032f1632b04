"""`haares bench`: throughput, memory and MFU of the residual schemes (haares/bench.py does the work)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def check_bench_args(
    *, family: str, layers: int, blocks: int, schemes: str, precision: str, steps: int, warmup: int
) -> None:
    """Every configuration the bench would build, checked before the first one runs (HaaresError/ConfigError)."""
    from haares.errors import HaaresError
    from haares.grids import family as model_family

    if family not in ("small", "medium", "large"):
        raise HaaresError(f"unknown family {family!r}; use small, medium or large")
    if steps < 1 or warmup < 0:
        raise HaaresError(f"--steps must be at least 1 and --warmup at least 0; got {steps} and {warmup}")
    bad = [p for p in precision.split(",") if p.strip() not in ("fp32", "bf16")]
    if bad:
        raise HaaresError(f"unknown precision {bad[0]!r}; use fp32, bf16 or fp32,bf16")
    names = [s.strip() for s in schemes.split(",") if s.strip()]
    if not names:
        raise HaaresError("--schemes is empty; give e.g. standard,block_attnres,haares")
    for scheme in names:
        model_family(family, layers, residual=scheme, blocks=blocks)  # ConfigError names what is wrong


def bench(
    family: Annotated[str, typer.Option(help="Model family: small, medium or large.")] = "medium",
    layers: Annotated[int, typer.Option(help="Transformer layers.")] = 48,
    blocks: Annotated[int, typer.Option(help="Block count N of the routing schemes.")] = 4,
    schemes: Annotated[str, typer.Option(help="Comma-separated residual schemes.")] = "standard,block_attnres,haares",
    precision: Annotated[str, typer.Option(help="Comma-separated precisions: fp32, bf16.")] = "fp32,bf16",
    router: Annotated[str, typer.Option(help="Router implementations: reference, fused (Inductor's bodies), triton (hand-written kernels, CUDA), triton_virtual (the kernels, HAARES's details never materialised), or auto (the trainer's choice on this device).")] = "auto",
    compile: Annotated[str, typer.Option(help="Compile sublayers and glue: no, yes, auto, or no,yes for both.")] = "auto",
    cuda_graph: Annotated[str, typer.Option(help="Whole step as one CUDA graph: no, yes, auto, or no,yes.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 16,
    seq_len: Annotated[int, typer.Option(help="Context length.")] = 512,
    steps: Annotated[int, typer.Option(help="Timed steps.")] = 20,
    warmup: Annotated[int, typer.Option(help="Untimed steps after compilation and graph capture.")] = 5,
    checks: Annotated[bool, typer.Option(help="Check each fast path against the plain fp32 reference.")] = True,
    device: Annotated[Optional[str], typer.Option(help="cuda, cuda:1 or cpu (default: cuda if available).")] = None,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Also write the raw result as JSON here.")] = None,
) -> None:
    """Time the trainer's own training step for each scheme and check every fast path against the fp32 reference.

    By default it measures what `haares worker` trains on this device (on CUDA: fused router, compiled
    sublayers, the whole step in one CUDA graph). Exits 1 when an equivalence check is over its bar
    (fp32: 1e-5; bf16: 1.5x Standard's own bf16 error) or missing.
    """
    from haares import bench as bench_mod
    from haares.errors import HaaresError, first_line
    from haares.runner import default_device

    check_bench_args(family=family, layers=layers, blocks=blocks, schemes=schemes, precision=precision,
                     steps=steps, warmup=warmup)
    device = default_device(device)
    argv = [
        "--family", family, "--layers", str(layers), "--blocks", str(blocks), "--schemes", schemes,
        "--precision", precision, "--router", router, "--compile", compile, "--cuda-graph", cuda_graph,
        "--batch-size", str(batch_size),
        "--seq-len", str(seq_len), "--steps", str(steps), "--warmup", str(warmup),
        "--device", device,
    ]
    if json_out:
        argv += ["--json", json_out]
    if not checks:
        argv += ["--no-checks"]
    try:
        code = bench_mod.main(argv)
    except (ValueError, RuntimeError) as exc:
        raise HaaresError(f"bench failed: {first_line(exc)}") from None
    if code:
        raise typer.Exit(code)

