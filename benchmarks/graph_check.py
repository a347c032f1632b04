"""Does a whole-step CUDA graph train the same as the eager step? One optimizer at a time (GPU).

Builds one model twice from the same seed, trains STEPS steps on the same batches through the
trainer's own `TrainStep` (compiled sublayers, fused router), once eager and once captured, and prints
per-step losses, their largest difference and the steps/s of each. Written to check Muon under
capture before the fast path's auto turns graphs on for it (it leaves Muon eager until then).

    python benchmarks/graph_check.py --grid golf --method muon --steps 40 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from haares.bench import build_train_step
from haares.config import ModelConfig, TrainConfig
from haares.fastpath import FastPath, matmul_precision
from haares.grids import expand, get_grid


def train(
    cfg: ModelConfig, train_cfg: TrainConfig, seq_len: int, *, graph: bool, steps: int, device: torch.device
) -> tuple[list[float], float]:
    """Per-step losses (nats) and timed steps/s over the steps after warm-up/capture."""
    with matmul_precision(train_cfg.precision):
        step = build_train_step(cfg, train_cfg, FastPath(router="fused", compile=True, cuda_graph=graph),
                                device, seed=42)
        gen = torch.Generator(device="cpu").manual_seed(0)
        batches = [torch.randint(0, cfg.vocab_size, (train_cfg.batch_size, seq_len + 1), generator=gen).to(device)
                   for _ in range(steps)]
        losses, t0, timed = [], None, 0
        for tokens in batches:
            warming = step.warming_up
            loss, _ = step(tokens)
            losses.append(loss)
            if not warming:
                if t0 is None:
                    torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                else:
                    timed += 1
        torch.cuda.synchronize(device)
        rate = timed / (time.perf_counter() - t0) if t0 is not None and timed else float("nan")
    return [float(x) for x in losses], rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="golf")
    parser.add_argument("--method", default="muon")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--json")
    args = parser.parse_args()
    spec = next(s for s in expand(get_grid(args.grid)) if s.method == args.method)
    device = torch.device("cuda")
    cfg = spec.config
    eager, eager_rate = train(cfg.model, cfg.train, cfg.data.seq_len, graph=False, steps=args.steps, device=device)
    graph, graph_rate = train(cfg.model, cfg.train, cfg.data.seq_len, graph=True, steps=args.steps, device=device)
    diffs = [abs(a - b) for a, b in zip(eager, graph, strict=True)]
    out = {"grid": args.grid, "method": args.method, "optimizer": spec.config.train.optimizer,
           "precision": spec.config.train.precision, "steps": args.steps,
           "eager_losses": eager, "graph_losses": graph, "max_abs_diff": max(diffs),
           "eager_steps_per_s": eager_rate, "graph_steps_per_s": graph_rate,
           "device": torch.cuda.get_device_name(device)}
    print(f"{args.grid}/{args.method} ({out['optimizer']}, {out['precision']}): loss at step 1 "
          f"{eager[0]:.4f} / {graph[0]:.4f}, at step {args.steps} {eager[-1]:.4f} / {graph[-1]:.4f} "
          f"(eager / graph), max |diff| {max(diffs):.2e}; {eager_rate:.1f} vs {graph_rate:.1f} steps/s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
