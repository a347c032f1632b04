"""How much of a routed scheme's bf16 error is the function's, not the implementation's (issue 11).

For each scheme and router-query scale: the relative gradient error of the plain reference path in bf16
(reference router, nothing compiled) against the same path in fp32, on the same weights and tokens as
`haares bench`'s checks. Scale 0 is uniform routing (the init); "bench" is the checks' own 1/sqrt(d).
Usage: python benchmarks/bf16_sensitivity.py [--layers 12] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch

from haares.equivalence import PLAIN, prepare_model, randomize_routers
from haares.fastpath import autocast, matmul_precision
from haares.grids import family


def grads(cfg, device, precision: str, scale: str) -> torch.Tensor:  # noqa: ANN001
    with matmul_precision(precision):
        model = prepare_model(cfg, device=device, fast=PLAIN)
        if scale == "bench":
            randomize_routers(model, seed=2)
        else:
            gen = torch.Generator().manual_seed(2)
            with torch.no_grad():
                for name, p in sorted(model.residual.named_parameters()):
                    if name.endswith(".w"):
                        p.copy_(float(scale) * torch.randn(p.shape, generator=gen))
        tok = torch.randint(0, cfg.vocab_size, (2, 129), generator=torch.Generator().manual_seed(1)).to(device)
        with autocast(precision, device):
            _, loss = model(tok[:, :-1], tok[:, 1:])
        loss.backward()
    return torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print("| scheme | router query scale | grads rel. err, plain bf16 vs fp32 |\n| --- | --- | --- |")
    for scheme in ("standard", "block_attnres", "haares"):
        cfg = family("small", args.layers, residual=scheme)
        for scale in ("0", "0.02", "0.1", "bench") if scheme != "standard" else ("-",):
            ref, got = grads(cfg, device, "fp32", scale), grads(cfg, device, "bf16", scale)
            print(f"| {scheme} | {scale} | {float((got - ref).norm() / ref.norm()):.2e} |")


if __name__ == "__main__":
    main()
