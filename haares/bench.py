"""Throughput and memory of the residual schemes (performance.md): `haares bench` / `python -m haares.bench`.

Times whole training steps (forward, backward, clipped fused AdamW) on random tokens after warm-up,
with the device synchronised around the clock; reports steps/s, tokens/s, peak memory, MFU against
a measured bf16 matmul peak, and checks that every fast path computes the same function as the
plain fp32 reference. Needs no database and no datasets, so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch

from haares import cost
from haares.config import ModelConfig
from haares.grids import family
from haares.model import build_model
from haares.residual.router import use_router


@dataclass
class BenchRow:
    """One measured configuration."""

    scheme: str
    precision: str
    router: str
    compiled: bool
    steps_per_s: float
    tokens_per_s: float
    step_ms: float
    peak_mem_gb: float
    mfu: float | None
    warmup_s: float
    """Wall time of the warm-up steps, compilation included."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device: torch.device, n: int = 8192, iters: int = 20) -> float | None:
    """Measured dense bf16 matmul rate (TFLOP/s) of the device: the MFU denominator. None on the CPU."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def _set_precision(precision: str) -> None:
    # fp32 reproduces the paper: no TF32 anywhere.
    allow = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


def prepare_model(
    cfg: ModelConfig, *, device: torch.device, router: str, compiled: bool
) -> torch.nn.Module:
    """A model on `device` with the chosen router and, if `compiled`, each sublayer compiled on its own.

    Compiling per sublayer (not the unrolled model) keeps compile time flat in depth: all attention
    sublayers share one graph, all MLP sublayers another.
    """
    model = build_model(cfg, seed=0).to(device)
    use_router(model, router)

    if compiled:
        for sub in model.sublayers:
            sub.compile(dynamic=False)
    return model


def bench_one(
    cfg: ModelConfig,
    *,
    precision: str,
    router: str,
    compiled: bool,
    batch_size: int,
    seq_len: int,
    steps: int,
    warmup: int,
    device: torch.device,
    peak_tflops: float | None,
) -> BenchRow:
    """Time `steps` training steps after `warmup` steps; memory peak over the timed steps."""
    _set_precision(precision)
    model = prepare_model(cfg, device=device, router=router, compiled=compiled)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=device.type == "cuda")
    gen = torch.Generator(device="cpu").manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (batch_size, seq_len + 1), generator=gen).to(device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with amp:
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    steps_per_s = steps / elapsed
    tokens_per_s = steps_per_s * batch_size * seq_len
    flops_per_s = cost.model_flops_per_token(cfg, seq_len) * tokens_per_s
    mfu = flops_per_s / (peak_tflops * 1e12) if peak_tflops else None
    return BenchRow(cfg.residual, precision, router, compiled, steps_per_s, tokens_per_s,
                    1000 / steps_per_s, peak / 2**30, mfu, warmup_s)


@torch.no_grad()
def randomize_routers(model: torch.nn.Module, *, seed: int) -> None:
    """Give every router query a seeded random value: at init they are zero, routing is uniform,
    and a comparison of router implementations there would not test the logits path. Scaled by
    1/sqrt(d) so logits are O(1), as in a trained model, not saturated softmaxes."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for name, p in sorted(model.residual.named_parameters()):
        if name.endswith(".w"):
            p.copy_(torch.randn(p.shape, generator=gen).to(p.device) / p.numel() ** 0.5)


def equivalence(
    cfg: ModelConfig, *, device: torch.device, router: str, precision: str, compiled: bool,
    batch_size: int = 2, seq_len: int = 128,
) -> dict[str, float]:
    """Relative error of logits and gradients of a fast path against the plain fp32 reference.

    Same weights, fresh random tokens; relative error = ||fast - ref|| / ||ref|| over all logits and
    over all gradients concatenated. NaN anywhere gives inf (never passes).
    """
    def run(router_name: str, prec: str, comp: bool) -> tuple[torch.Tensor, torch.Tensor]:
        _set_precision("fp32" if prec == "fp32" else "bf16")
        model = prepare_model(cfg, device=device, router=router_name, compiled=comp)
        randomize_routers(model, seed=2)
        gen = torch.Generator(device="cpu").manual_seed(1)
        tok = torch.randint(0, cfg.vocab_size, (batch_size, seq_len + 1), generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
            logits, loss = model(tok[:, :-1], tok[:, 1:])
        loss.backward()
        grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])
        return logits.detach().float(), grads

    ref_logits, ref_grads = run("reference", "fp32", False)
    logits, grads = run(router, precision, compiled)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        if not torch.isfinite(a).all():
            return float("inf")
        return float((a - b).norm() / b.norm().clamp_min(1e-30))

    return {"logits_rel_err": rel(logits, ref_logits), "grads_rel_err": rel(grads, ref_grads)}


def run_bench(
    *,
    family_name: str,
    n_layers: int,
    schemes: Iterable[str],
    precisions: Iterable[str],
    routers: Iterable[str],
    compile_options: Iterable[bool],
    batch_size: int,
    seq_len: int,
    steps: int,
    warmup: int,
    device: torch.device,
    blocks: int = 4,
    vocab_size: int = 256,
    progress_path: str | None = None,
    checks: bool = True,
) -> dict:
    """Every combination, skipping router variants for schemes without routers."""
    peak = matmul_peak_tflops(device)
    rows = []
    checks = []
    for scheme in schemes:
        cfg = family(family_name, n_layers, residual=scheme, blocks=blocks, vocab_size=vocab_size)
        for precision in precisions:
            for router in routers if scheme in ("block_attnres", "haares") else ["reference"]:
                for compiled in compile_options:
                    row = bench_one(cfg, precision=precision, router=router, compiled=compiled,
                                    batch_size=batch_size, seq_len=seq_len, steps=steps, warmup=warmup,
                                    device=device, peak_tflops=peak)
                    rows.append(asdict(row))
                    if progress_path:  # partial results survive a time limit
                        with open(progress_path, "a") as fh:
                            fh.write(json.dumps(rows[-1]) + "\n")
                    gc.collect()  # the step closure keeps the last model alive until collected
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    print(json.dumps(rows[-1]), flush=True)
                    if checks and (router != "reference" or compiled or precision != "fp32"):
                        check = equivalence(cfg, device=device, router=router, precision=precision,
                                            compiled=compiled)
                        checks.append({"scheme": scheme, "precision": precision, "router": router,
                                       "compiled": compiled, **check})
                        print(json.dumps(checks[-1]), flush=True)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "matmul_peak_tflops": peak,
        "model": {"family": family_name, "n_layers": n_layers, "blocks": blocks, "vocab_size": vocab_size,
                  "batch_size": batch_size, "seq_len": seq_len},
        "rows": rows,
        "checks": checks,
    }


def to_markdown(result: dict) -> str:
    """The bench result as a Markdown table plus the equivalence checks."""
    m = result["model"]
    lines = [
        f"device: {result['device']}, torch {result['torch']}, measured bf16 matmul peak: "
        f"{result['matmul_peak_tflops'] or float('nan'):.0f} TFLOP/s; model: {m['family']} {m['n_layers']}L, "
        f"N={m['blocks']}, vocab {m['vocab_size']}, batch {m['batch_size']} x {m['seq_len']}",
        "",
        "| scheme | precision | router | compiled | steps/s | step ms | tokens/s | peak GiB | MFU | warm-up s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(
            f"| {r['scheme']} | {r['precision']} | {r['router']} | {'yes' if r['compiled'] else 'no'} | "
            f"{r['steps_per_s']:.2f} | {r['step_ms']:.1f} | {r['tokens_per_s']:,.0f} | {r['peak_mem_gb']:.1f} | "
            f"{mfu} | {r['warmup_s']:.1f} |"
        )
    if result["checks"]:
        lines += ["", "| scheme | precision | router | compiled | logits rel. err | grads rel. err |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for c in result["checks"]:
            lines.append(f"| {c['scheme']} | {c['precision']} | {c['router']} | {'yes' if c['compiled'] else 'no'} | "
                         f"{c['logits_rel_err']:.2e} | {c['grads_rel_err']:.2e} |")
    return "\n".join(lines)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m haares.bench", description=__doc__)
    parser.add_argument("--family", default="medium", choices=["small", "medium", "large"])
    parser.add_argument("--layers", type=int, default=48)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--schemes", default="standard,block_attnres,haares")
    parser.add_argument("--precision", default="fp32,bf16")
    parser.add_argument("--router", default="reference,fused")
    parser.add_argument("--compile", default="no,yes", help="no, yes or both (no,yes)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-checks", action="store_true", help="skip the equivalence checks")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", dest="json_out", default=None, help="write the raw result here")
    parser.add_argument("--md", dest="md_out", default=None, help="write the Markdown table here")
    args = parser.parse_args(argv)
    result = run_bench(
        family_name=args.family, n_layers=args.layers, schemes=_csv(args.schemes),
        precisions=_csv(args.precision), routers=_csv(args.router),
        compile_options=[c == "yes" for c in _csv(args.compile)], batch_size=args.batch_size,
        seq_len=args.seq_len, steps=args.steps, warmup=args.warmup, device=torch.device(args.device),
        blocks=args.blocks, checks=not args.no_checks, progress_path=args.json_out + "l" if args.json_out else None,
    )
    table = to_markdown(result)
    print(table)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(result, fh, indent=1)
    if args.md_out:
        with open(args.md_out, "w") as fh:
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
