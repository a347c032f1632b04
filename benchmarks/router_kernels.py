"""One router call, forward and backward, on each fused-router implementation: time and bandwidth.

The shapes of a medium 48L HAARES router (B x T = 16 x 512, D = 512, fp32 sources) at several source
counts M; every other source from the fourth on is given as a detail recipe (rebuilt from the source
before it, as HAARES's are). Two routers read the same sources, so the one that runs second in
backward adds into running gradient sums. Prints one row per (implementation, M) with microseconds
per router call and the GB/s of the bytes a call must move at least (forward: each source once;
backward: each source and its gradient once, plus its running sum in the second router; G and h).

    python3 benchmarks/router_kernels.py --sources 3,5,9,17 --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from haares.residual.fused_router import FusedRoute
from haares.residual.haares import Detail


def _call(route: FusedRoute, m: int, b: int, t: int, d: int, device: torch.device):
    gen = torch.Generator(device=device).manual_seed(0)
    leaves = [torch.randn(b, t, d, device=device, generator=gen).requires_grad_() for _ in range(m)]
    scale = torch.rand(b, t, 1, device=device, generator=gen) + 0.5
    half = torch.randn(b, t, d, device=device, generator=gen)
    values, details = list(leaves), []
    for slot in range(3, m, 2):  # slots 3, 5, ...: details of the slot before, alternately with b^(h)
        with_half = (slot // 2) % 2 == 0
        values[slot] = ((2 * half - values[slot - 1]) if with_half else values[slot - 1]) * scale
        details.append(Detail(slot, slot - 1, half if with_half else None, scale))
    queries = [torch.randn(d, device=device, generator=gen).requires_grad_() for _ in range(2)]
    gain = torch.ones(d, device=device).requires_grad_()
    grad = torch.randn(b, t, d, device=device, generator=gen)

    def step(backward: bool = True):
        h = sum(route(values, q, gain, None, 1e-6, details) for q in queries)
        if backward:
            h.backward(grad, retain_graph=True)

    return step, leaves


def kernel_us(fn, iters: int) -> dict[str, float]:
    """Device microseconds per call of fn, by kernel name (torch.profiler): kernel time only, so the
    host's cost of an uncaptured router call (which `haares worker`'s CUDA graph removes) is left out."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    kernels = {}
    for event in prof.key_averages():
        if event.device_type == torch.autograd.DeviceType.CUDA and event.self_device_time_total > 0:
            kernels[event.key] = event.self_device_time_total / iters
    return kernels


def measure(impl: str, m: int, args, device, layout: str = "") -> dict:
    """layout "ROWSxWARPS" or "ROWSxWARPSxLOOP" (triton only): rows per program, warps and row blocks a
    backward program takes in a loop, in place of the kernels' choice."""
    if layout:
        from haares.residual import triton_router

        rows, warps, *loop = (int(x) for x in layout.split("x"))
        triton_router._layout = lambda d: (triton_router.triton.next_power_of_2(d), rows, warps)
        triton_router.BACKWARD_LOOP = loop[0] if loop else 1
    route = FusedRoute(compiled=True, triton=impl == "triton")
    step, leaves = _call(route, m, args.batch_size, args.seq_len, args.d_model, device)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    kernels = kernel_us(step, args.iters)
    fwd_kernels = kernel_us(lambda: step(False), args.iters)
    us, fwd_us = sum(kernels.values()) / 2, sum(fwd_kernels.values()) / 2
    source_bytes = leaves[0].numel() * 4
    moved = source_bytes * (3.5 * m + 2)  # see the module docstring
    return {"impl": impl, "layout": layout, "sources": m, "us_per_call": round(us, 1), "forward_us": round(fwd_us, 1),
            "kernels_us": {k[:60]: round(v / 2, 1) for k, v in sorted(kernels.items(), key=lambda kv: -kv[1])[:6]}, "min_GB_per_s": round(moved / us / 1e3, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default="3,5,9,17")
    parser.add_argument("--impls", default="fused,triton")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--layouts", default="", help="triton layouts to try, ROWSxWARPS[xLOOP] comma-separated (e.g. 8x8,1x1,1x1x8)")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("router_kernels.py times CUDA kernels: run it on a machine with a GPU")
    rows = []
    for m in (int(x) for x in args.sources.split(",")):
        for impl in args.impls.split(","):
            for layout in (args.layouts.split(",") if impl == "triton" and args.layouts else [""]):
                rows.append(measure(impl, m, args, torch.device("cuda"), layout))
                print(json.dumps(rows[-1]), flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
