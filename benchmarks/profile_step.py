"""Where a training step's GPU time goes, per scheme: routers, HAARES's glue, sublayers, the rest.

Runs the fast path's pieces (fused router, compiled sublayers and glue) eagerly, without the CUDA
graph, so torch.profiler can attribute kernels to the ops that launched them: forward regions are
marked here with record_function (routers, glue, sublayers; by wrapping, so the package is
untouched); in backward the router's kernels are those of its autograd node (_FusedRouteBackward).
GPU time is summed over kernels, so it is the step's device time without launch gaps: compare it
with `haares bench`'s step time (the graph replay) to see what the host costs.

    python3 benchmarks/profile_step.py --family medium --layers 48 --schemes block_attnres,haares \
        --precision bf16 --json OUT.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from haares.bench import build_train_step
from haares.config import TrainConfig
from haares.fastpath import FastPath, matmul_precision
from haares.grids import family
from haares.residual.router import Router

REGIONS = ("router_fwd", "glue_fwd", "sublayer_fwd")
ROUTER_BACKWARD = "_FusedRouteBackward"


def _marked(fn, name):
    def wrapped(*args, **kwargs):
        with record_function(name):
            return fn(*args, **kwargs)

    return wrapped


class _MarkedSublayer(torch.nn.Module):
    """A (compiled) sublayer called inside a named range; the range stays outside the compiled code."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args):
        with record_function("sublayer_fwd"):
            return self.inner(*args)


def mark_regions(model: torch.nn.Module) -> None:
    """Wrap every router call, the scheme's glue and each sublayer in a named range."""
    for module in model.modules():
        if isinstance(module, Router):
            module.route_fn = _marked(module.route_fn, "router_fwd")
    if hasattr(model.residual, "next_sources"):
        model.residual.next_sources = _marked(model.residual.next_sources, "glue_fwd")
    for k, sublayer in enumerate(model.sublayers):
        model.sublayers[k] = _MarkedSublayer(sublayer)


def device_ms_by_region(prof, steps: int) -> dict[str, float]:
    """Kernel time (ms per step) under each marked range, the router backward node, and the rest.

    The profiler attaches each kernel to the CPU op that launched it (`event.kernels`); walking up
    that op's parents finds the region.
    """
    totals: dict[str, float] = defaultdict(float)
    launchers = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU and e.kernels]
    if not launchers:
        raise SystemExit("the profiler saw no CUDA kernels: is this a GPU machine?")
    for op in launchers:
        region, parent = "other", op
        while parent is not None:
            if parent.name in REGIONS:
                region = parent.name
                break
            if ROUTER_BACKWARD in parent.name:
                region = "router_bwd"
                break
            parent = parent.cpu_parent
        totals[region] += sum(k.duration for k in op.kernels) / 1000
    totals["total"] = sum(totals.values())
    return {k: round(v / steps, 3) for k, v in sorted(totals.items())}


def profile_scheme(scheme: str, args: argparse.Namespace, device: torch.device) -> dict:
    cfg = family(args.family, args.layers, residual=scheme)
    fast = FastPath(router=args.router, compile=True, cuda_graph=False)
    with matmul_precision(args.precision):
        step = build_train_step(cfg, TrainConfig(precision=args.precision), fast, device, seed=0)
        mark_regions(step.model)
        tokens = torch.randint(0, cfg.vocab_size, (args.batch_size, args.seq_len + 1), device=device)
        for _ in range(args.warmup):
            step(tokens)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(args.steps):
                step(tokens)
            torch.cuda.synchronize()
    top = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.top)
    return {"scheme": scheme, "precision": args.precision, "ms_per_step": device_ms_by_region(prof, args.steps),
            "top_kernels": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="medium")
    parser.add_argument("--layers", type=int, default=48)
    parser.add_argument("--schemes", default="block_attnres,haares")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--router", default="fused", help="fused (Inductor's bodies), triton (hand-written kernels) or triton_virtual (the kernels, HAARES's details never materialised)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("profile_step.py profiles CUDA kernels and needs a GPU; this machine has none")
    device = torch.device("cuda")
    results = []
    for scheme in args.schemes.split(","):
        result = profile_scheme(scheme, args, device)
        print(f"{scheme} {args.precision}: {json.dumps(result['ms_per_step'])}")
        print(result["top_kernels"])
        results.append(result)
        torch.cuda.empty_cache()
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
