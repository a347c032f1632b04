"""Throughput and memory of the residual schemes (performance.md): `haares bench` / `python -m haares.bench`.

Times whole training steps (forward, backward, clipped fused AdamW) on random tokens after warm-up,
with the device synchronised around the clock; reports steps/s, tokens/s, peak memory, MFU against
a measured bf16 matmul peak, and checks that every fast path computes the same function as the
plain fp32 reference (the checks and their bars: haares/equivalence.py). Needs no database and no
datasets, so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch

from haares import cost
from haares.config import ModelConfig, TrainConfig
from haares.equivalence import check_bars, equivalence, needs_check, plain_bf16_twins, problems
from haares.fastpath import FastPath, apply_fast_path, matmul_precision, resolve_fast_path
from haares.grids import family
from haares.measure import device_name, synchronize
from haares.model import build_model
from haares.step import TrainStep
from haares.train import make_optimizer


@dataclass
class BenchRow:
    """One measured configuration."""

    scheme: str
    precision: str
    router: str
    compiled: bool
    cuda_graph: bool
    steps_per_s: float
    tokens_per_s: float
    step_ms: float
    peak_mem_gb: float
    mfu: float | None
    warmup_s: float
    """Wall time of the untimed steps: compilation, graph capture and the extra warm-up steps."""


def matmul_peak_tflops(device: torch.device, n: int = 8192, iters: int = 20) -> float | None:
    """Measured dense bf16 matmul rate (TFLOP/s) of the device: the MFU denominator. None on the CPU."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    synchronize(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def build_train_step(cfg: ModelConfig, train_cfg: TrainConfig, fast: FastPath, device: torch.device, *,
                     seed: int) -> TrainStep:
    """The trainer's step for a model built from `seed`: its optimizer (capturable for a graph), the fast
    path applied, clipping and precision from `train_cfg`. Call inside `matmul_precision`."""
    model = build_model(cfg, seed=seed).to(device)
    optimizer = make_optimizer(model, train_cfg, device, capturable=fast.cuda_graph)
    apply_fast_path(model, fast)
    return TrainStep(model, optimizer, grad_clip=train_cfg.grad_clip, precision=train_cfg.precision,
                     cuda_graph=fast.cuda_graph, compiled=fast.compile)


def bench_one(
    cfg: ModelConfig,
    *,
    precision: str,
    fast: FastPath,
    batch_size: int,
    seq_len: int,
    steps: int,
    warmup: int,
    device: torch.device,
    peak_tflops: float | None,
) -> BenchRow:
    """Time `steps` training steps of the trainer's own TrainStep (AdamW groups, clipping, precision).

    Untimed first: the steps that compile or capture, then `warmup` more. Memory peak over all of them.
    """
    with matmul_precision(precision):
        step = build_train_step(cfg, TrainConfig(precision=precision), fast, device, seed=0)
        gen = torch.Generator(device="cpu").manual_seed(0)
        tokens = torch.randint(0, cfg.vocab_size, (batch_size, seq_len + 1), generator=gen).to(device)

        # Peak memory over warm-up and timed steps alike: a captured graph's activations live in its
        # private pool, allocated during capture, so a peak taken over replays alone would miss them.
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        while step.warming_up:
            step(tokens)
        for _ in range(warmup):
            step(tokens)
        synchronize(device)
        warmup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            step(tokens)
        synchronize(device)
        elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    steps_per_s = steps / elapsed
    tokens_per_s = steps_per_s * batch_size * seq_len
    flops_per_s = cost.model_flops_per_token(cfg, seq_len) * tokens_per_s
    mfu = flops_per_s / (peak_tflops * 1e12) if peak_tflops else None
    return BenchRow(cfg.residual, precision, fast.router, fast.compile, fast.cuda_graph, steps_per_s,
                    tokens_per_s, 1000 / steps_per_s, peak / 2**30, mfu, warmup_s)


def paths_for(scheme: str, routers: Iterable[str], compile_options: Iterable[bool],
              graph_options: Iterable[bool]) -> list[FastPath]:
    """The fast paths to measure for a scheme; router variants only for schemes with routers."""
    scheme_routers = list(routers) if scheme in ("block_attnres", "haares") else ["reference"]
    return [FastPath(router=r, compile=c, cuda_graph=g)
            for r in dict.fromkeys(scheme_routers) for c in compile_options for g in graph_options]


def run_bench(
    *,
    family_name: str,
    n_layers: int,
    schemes: Iterable[str],
    precisions: Iterable[str],
    routers: Iterable[str],
    compile_options: Iterable[bool],
    graph_options: Iterable[bool] = (False,),
    batch_size: int,
    seq_len: int,
    steps: int,
    warmup: int,
    device: torch.device,
    blocks: int = 4,
    vocab_size: int = 256,
    progress_path: str | None = None,
    checks: bool = True,
    on_row: Callable[[dict], None] | None = None,
) -> dict:
    """Every combination, each timed row followed by its equivalence check; bf16 checks get their bar
    from Standard's own bf16 error (measured here even when Standard is not among `schemes`)."""
    schemes, precisions = list(schemes), list(precisions)
    compile_options, graph_options = list(compile_options), list(graph_options)
    if any(graph_options) and device.type != "cuda":
        raise ValueError("CUDA graphs need a CUDA device; use --cuda-graph no on the CPU")
    peak = matmul_peak_tflops(device)
    rows: list[dict] = []
    found_checks: list[dict] = []
    for scheme in schemes:
        cfg = family(family_name, n_layers, residual=scheme, blocks=blocks, vocab_size=vocab_size)
        for precision in precisions:
            for fast in paths_for(scheme, routers, compile_options, graph_options):
                row = asdict(bench_one(cfg, precision=precision, fast=fast, batch_size=batch_size,
                                       seq_len=seq_len, steps=steps, warmup=warmup, device=device,
                                       peak_tflops=peak))
                _release(device)
                if checks and needs_check(row):
                    found_checks.append({**{k: row[k] for k in ("scheme", "precision", "router", "compiled",
                                                                 "cuda_graph")},
                                         **equivalence(cfg, device=device, fast=fast, precision=precision)})
                    _release(device)
                rows.append(row)
                if progress_path:  # partial results survive a time limit
                    with open(progress_path, "a") as fh:
                        fh.write(json.dumps(row) + "\n")
                if on_row:
                    on_row(row)
    if checks:
        found_checks += plain_bf16_twins(found_checks, family_name, n_layers, blocks, vocab_size, device)
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "matmul_peak_tflops": peak,
        "model": {"family": family_name, "n_layers": n_layers, "blocks": blocks, "vocab_size": vocab_size,
                  "batch_size": batch_size, "seq_len": seq_len},
        "rows": rows,
        "checks": check_bars(found_checks),
    }


def _release(device: torch.device) -> None:
    gc.collect()  # the step closure keeps the last model alive until collected
    if device.type == "cuda":
        torch.cuda.empty_cache()


def to_markdown(result: dict) -> str:
    """The bench result as a Markdown table plus the equivalence checks with their bars."""
    m = result["model"]
    yes = {True: "yes", False: "no"}
    lines = [
        f"device: {result['device']}, torch {result['torch']}, measured bf16 matmul peak: "
        f"{_fmt(result['matmul_peak_tflops'], '.0f')} TFLOP/s; model: {m['family']} {m['n_layers']}L, "
        f"N={m['blocks']}, vocab {m['vocab_size']}, batch {m['batch_size']} x {m['seq_len']}",
        "",
        "| scheme | precision | router | compiled | CUDA graph | steps/s | step ms | tokens/s | peak GiB | MFU | warm-up s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(
            f"| {r['scheme']} | {r['precision']} | {r['router']} | {yes[r['compiled']]} | {yes[r['cuda_graph']]} | "
            f"{r['steps_per_s']:.2f} | {r['step_ms']:.1f} | {r['tokens_per_s']:,.0f} | {r['peak_mem_gb']:.1f} | "
            f"{mfu} | {r['warmup_s']:.1f} |"
        )
    if result["checks"]:
        lines += ["", "| scheme | precision | router | compiled | logits rel. err (bar) | grads rel. err (bar) | passed "
                      "| grads vs Standard bf16 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in result["checks"]:
            lines.append(
                f"| {c['scheme']} | {c['precision']} | {c['router']} | {yes[c['compiled']]} | "
                f"{c['logits_rel_err']:.2e} ({c['logits_bar']:.1e}) | {c['grads_rel_err']:.2e} ({c['grads_bar']:.1e}) | "
                f"{yes[c['passed']]} | {_fmt(c.get('vs_standard'), '.2f')} |"
            )
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _switches(text: str, auto: bool) -> list[bool]:
    """'no', 'yes', 'no,yes' or 'auto' (the trainer's default on this device) -> booleans."""
    values = []
    for part in _csv(text):
        if part not in ("yes", "no", "auto"):
            raise ValueError(f"expected yes, no or auto, got {part!r}")
        values.append(auto if part == "auto" else part == "yes")
    return list(dict.fromkeys(values))


def main(argv: list[str] | None = None) -> int:
    """Measure, print the tables, write --json/--md; returns 1 (and says why) when a check fails or is missing."""
    parser = argparse.ArgumentParser(prog="python -m haares.bench", description=__doc__)
    parser.add_argument("--family", default="medium", choices=["small", "medium", "large"])
    parser.add_argument("--layers", type=int, default=48)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--schemes", default="standard,block_attnres,haares")
    parser.add_argument("--precision", default="fp32,bf16")
    parser.add_argument("--router", default="auto", help="reference, fused, triton, triton_virtual or auto (the trainer's default), comma-separated")
    parser.add_argument("--compile", default="auto", help="no, yes, auto, or a list such as no,yes")
    parser.add_argument("--cuda-graph", default="auto", help="no, yes, auto, or a list such as no,yes")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps after compilation and capture")
    parser.add_argument("--no-checks", action="store_true", help="skip the equivalence checks")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", dest="json_out", default=None, help="write the raw result here")
    parser.add_argument("--md", dest="md_out", default=None, help="write the Markdown table here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    auto = resolve_fast_path(TrainConfig(), device)  # what the trainer runs on this device
    routers = [auto.router if r == "auto" else r for r in _csv(args.router)]
    result = run_bench(
        family_name=args.family, n_layers=args.layers, schemes=_csv(args.schemes),
        precisions=_csv(args.precision), routers=routers,
        compile_options=_switches(args.compile, auto.compile), graph_options=_switches(args.cuda_graph, auto.cuda_graph),
        batch_size=args.batch_size, seq_len=args.seq_len, steps=args.steps, warmup=args.warmup, device=device,
        blocks=args.blocks, checks=not args.no_checks, progress_path=args.json_out + "l" if args.json_out else None,
        on_row=lambda r: print(f"measured {r['scheme']} {r['precision']} {r['router']} compiled={r['compiled']} "
                               f"graph={r['cuda_graph']}: {r['steps_per_s']:.2f} steps/s", flush=True),
    )
    table = to_markdown(result)
    print(table)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(result, fh, indent=1)
    if args.md_out:
        with open(args.md_out, "w") as fh:
            fh.write(table + "\n")
    found = problems(result) if not args.no_checks else ([] if result["rows"] else ["no configuration was measured"])
    for problem in found:
        print(f"check failed: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
