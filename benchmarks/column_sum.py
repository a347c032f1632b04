"""Ways to sum the router backward's du partials over rows: which is fastest on this GPU?

Each router call's backward kernel writes du as per-program partials, (R / ROWS, D) fp32 (at medium
48L: 8192 x 512, 16 MB), and `triton_router.backward` sums them with ATen (`du_parts.sum(0)`). The
step profile of 2026-12-08 (docs/performance.md) shows that reduction at about 20 us a call, one call
per router, about 2 ms a step for Block AttnRes and HAARES alike: well under the HBM's bandwidth for
16 MB. This times the candidates on the real shape, each checked against float64 first, so that the
choice is a measurement:

    python3 benchmarks/column_sum.py --rows 8192 --width 512 --json OUT.json
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.router_kernels import kernel_us


def candidates(x: torch.Tensor) -> dict:
    """name -> zero-argument function summing x (R, D) over its rows into (D,)."""
    ones = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
    split = 64 if x.shape[0] % 64 == 0 else 1
    return {
        "sum(0)": lambda: x.sum(0),
        "ones @ x": lambda: ones @ x,
        "x.T.mv(ones)": lambda: x.t().mv(ones),
        f"two-stage view({split}, -1, D)": lambda: x.view(split, -1, x.shape[1]).sum(1).sum(0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("column_sum.py times CUDA kernels: run it on a GPU machine")
    x = torch.randn(args.rows, args.width, device="cuda")
    want = x.double().sum(0)
    rows = []
    for name, fn in candidates(x).items():
        err = float((fn().double() - want).abs().max() / want.abs().max())
        fn()  # warm-up (cuBLAS's first call picks its kernel)
        us = sum(kernel_us(fn, args.iters).values())  # device time, as the step profile counts it
        rows.append({"method": name, "us": round(us, 2), "rel_err": err, "GB_per_s": round(x.numel() * 4 / us / 1e3, 1)})
        print(json.dumps(rows[-1]))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": args.rows, "width": args.width,
                       "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
