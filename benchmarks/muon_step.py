"""How long one Muon step takes on a model's backbone matrices: stacked by shape (haares/optim.py,
what training runs) against one Newton-Schulz per matrix (the step before stacking), same inputs.

    python benchmarks/muon_step.py --family small --layers 48 --device cpu --repeat 5

Prints ms per step (best of --repeat) for both and the largest difference of their updated weights.
"""

from __future__ import annotations

import argparse
import time

import torch

from haares.config import TrainConfig
from haares.grids import family
from haares.model import GPT
from haares.optim import Muon, orthogonalise
from haares.train import make_optimizer


def per_matrix_step(muon: Muon) -> None:
    """The step before stacking: momentum, Newton-Schulz and update one matrix at a time."""
    for group in muon.param_groups:
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        for p in group["params"]:
            buf = muon.state[p].setdefault("momentum_buffer", torch.zeros_like(p.grad))
            buf.mul_(mu).add_(p.grad)
            update = orthogonalise(p.grad.add(buf, alpha=mu), steps=group["ns_steps"])
            update *= max(1.0, p.shape[0] / p.shape[1]) ** 0.5
            p.mul_(1.0 - lr * wd)
            p.add_(update.to(p.dtype), alpha=-lr)


def best_ms(step, device: torch.device, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="small")
    parser.add_argument("--layers", type=int, default=48)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    model = GPT(family(args.family, args.layers, residual="standard")).to(device)
    muon = make_optimizer(model, TrainConfig(optimizer="muon", weight_decay=0.01), device).muon
    params = [p for g in muon.param_groups for p in g["params"]]
    gen = torch.Generator(device=device).manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, device=device)
    start = [p.detach().clone() for p in params]
    # Warm-up, then reset weights and momentum so both paths take the same first step.
    muon.step()
    weights, ms = {}, {}  # per path: the weights after one step from `start`, best ms a step
    for label, step in (("stacked by shape", muon.step), ("per matrix", lambda: per_matrix_step(muon))):
        for p, w in zip(params, start, strict=True):
            p.copy_(w)
        muon.state.clear()
        step()
        weights[label] = [p.detach().clone() for p in params]
        ms[label] = best_ms(step, device, args.repeat)
    shapes = sorted({tuple(p.shape) for p in params})
    diff = max((a - b).abs().max().item()
               for a, b in zip(weights["stacked by shape"], weights["per matrix"], strict=True))
    print(f"{args.family} {args.layers}L on {device}: {len(params)} matrices in {len(shapes)} shapes")
    print(f"stacked by shape {ms['stacked by shape']:.1f} ms, per matrix {ms['per matrix']:.1f} ms "
          f"a step; largest weight difference after one step {diff:.2e}")


if __name__ == "__main__":
    main()
