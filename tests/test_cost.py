"""haares.cost against the paper and against the real model: parameter counts (5.5M ... 453M, and exact
equality with sum(p.numel()) for tiny models), source counts counted by instrumentation in a real
48-layer forward pass vs the closed forms and Table 10, Eq. 13/14 numbers quoted in the spec, model
FLOPs and source memory formulas, and that cost.py imports no torch.
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import pytest
import torch

from haares import cost
from haares.config import ModelConfig
from haares.errors import HaaresError
from haares.grids import family
from haares.model import build_model, n_params
from haares.residual import RESIDUALS
from haares.residual.router import record_sources

torch.set_num_threads(1)  # tiny models: extra threads only contend on the shared 2-core machine

# (family, layers, extra config, the paper's figure in millions, the unit of its last printed digit)
PAPER_PARAMS = [
    ("small", 12, {}, 5.5, 0.1),
    ("small", 24, {}, 11, 1),
    ("small", 48, {}, 22, 1),
    ("medium", 48, {}, 201, 1),
    ("medium", 48, {"vocab_size": 4096}, 204, 1),
    ("large", 48, {}, 453, 1),
]


@pytest.mark.parametrize(("fam", "layers", "extra", "paper", "unit"), PAPER_PARAMS)
@pytest.mark.parametrize("residual", ["standard", "block_attnres", "haares"])
def test_param_counts_match_the_paper_to_its_rounding(fam, layers, extra, paper, unit, residual):
    """The paper says "about" N M; ours must lie within one unit of its last printed digit."""
    ours = cost.param_count(family(fam, layers, residual=residual, **extra)) / 1e6
    assert abs(ours - paper) < unit, (ours, paper)


def test_param_counts_are_the_spec_numbers():
    # model-spec.md section 1 (HAARES, routers included): 5.54 / 11.04 (11.06) / 22.05 (22.09), 201.6, 203.6, 453.2 (453.4)
    haares = {(f, n, e.get("vocab_size", 256)): cost.param_count(family(f, n, **e)) for f, n, e, _, _ in PAPER_PARAMS}
    assert haares[("small", 12, 256)] == 5_547_396
    assert haares[("medium", 48, 256)] == 201_606_660
    assert haares[("medium", 48, 4096)] == 203_572_740
    assert cost.param_count(family("large", 48, residual="standard")) == 453_255_936


TINY = dict(vocab_size=32, d_model=32, n_layers=4, n_heads=2, d_ff=48, blocks=2)
VARIANTS = [{"residual": name} for name in RESIDUALS] + [
    {"residual": "haares", "detail_bias": -2.0},
    {"residual": "haares", "detail": "dup_cumulative"},
    {"residual": "haares", "detail": "random_sign", "rms_match": False},
    {"residual": "haares", "blocks": 4},
    {"residual": "layerscale", "n_layers": 2},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_param_count_equals_the_real_model(variant):
    cfg = ModelConfig(**{**TINY, **variant})
    model = build_model(cfg, seed=0)
    assert cost.param_count(cfg) == n_params(model)
    assert cost.non_embedding_params(cfg) == n_params(model) - model.embed.weight.numel()


def test_param_count_allocates_nothing():
    """A 453M config is counted with no tensors at all: cost.py does not even import torch."""
    code = (
        "import sys; from haares import cost; from haares.grids import family;"
        "n = cost.param_count(family('large', 48)); assert 'torch' not in sys.modules, 'torch imported';"
        "print(n)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == 453_404_932


def tiny48(residual: str, blocks: int, **kw) -> ModelConfig:
    return ModelConfig(
        vocab_size=16, d_model=16, n_layers=48, n_heads=2, d_ff=16, residual=residual, blocks=blocks, **kw
    )


@pytest.mark.parametrize("blocks", [4, 6, 8])
@pytest.mark.parametrize("residual", ["block_attnres", "haares"])
def test_instrumented_source_counts_reproduce_table10(residual, blocks):
    model = build_model(tiny48(residual, blocks), seed=0)
    with torch.no_grad(), record_sources(model) as rec:
        model(torch.zeros(1, 2, dtype=torch.long))
    assert rec.sublayer == cost.source_counts(residual, 48, blocks)
    assert rec.readout == [blocks + 1]  # e, b_1..b_N
    avg, mx = sum(rec.sublayer) / 96, max(rec.sublayer)
    paper_avg, paper_max = cost.PAPER_TABLE10[(residual, blocks)]
    assert abs(avg - paper_avg) <= 0.005 + 1e-12 and mx == paper_max
    # Eq. 13 closed forms, exactly.
    S = 96 // blocks
    closed = Fraction(blocks + 1, 2) + Fraction(S - 1, S) if residual == "block_attnres" else blocks + Fraction(2 * (S - 1), S)
    assert Fraction(sum(rec.sublayer), 96) == closed
    assert mx == (blocks + 1 if residual == "block_attnres" else 2 * blocks + 1)


@pytest.mark.parametrize(
    "ablation",
    [{"detail": "dup_cumulative"}, {"detail": "random_sign"}, {"detail_bias": -4.0}, {"rms_match": False}],
)
def test_haares_ablations_share_haares_source_counts(ablation):
    model = build_model(tiny48("haares", 4, **ablation), seed=0)
    with torch.no_grad(), record_sources(model) as rec:
        model(torch.zeros(1, 2, dtype=torch.long))
    assert rec.sublayer == cost.source_counts("haares", 48, 4)
    assert Fraction(sum(rec.sublayer), 96) == Fraction(71, 12)


def test_table10_rows():
    rows = cost.table10()
    assert [(r["residual"], r["blocks"]) for r in rows] == [
        (res, n) for n in (4, 6, 8) for res in ("block_attnres", "haares")
    ]
    got = [(f"{r['avg_sources']:.2f}", r["max_sources"]) for r in rows]
    assert got == [("3.46", 5), ("5.92", 9), ("4.44", 7), ("7.88", 13), ("5.42", 9), ("9.83", 17)]
    assert all(r["paper_avg"] is not None for r in rows)
    assert cost.source_stats("block_attnres", 48, 4)[0] == 83 / 24
    assert cost.source_stats("haares", 48, 4)[0] == 71 / 12
    # Other depths (spec section 7), N = 4: 12L 3.3333/5, 5.6667/9; 24L 3.4167/5, 5.8333/9.
    assert round(cost.source_stats("block_attnres", 12, 4)[0], 4) == 3.3333
    assert round(cost.source_stats("haares", 24, 4)[0], 4) == 5.8333
    assert all(r["paper_avg"] is None for r in cost.table10(n_layers=24))


def test_delta_sources_and_eq14_ratios_quoted_in_the_spec():
    assert cost.delta_sources(48, 4) == pytest.approx(2.4583, abs=1e-4)
    assert cost.delta_sources(48, 8) == pytest.approx(4.4167, abs=1e-4)
    for n in (4, 6, 8):  # (N+1)/2 - N/(2L)
        assert cost.delta_sources(48, n) == pytest.approx((n + 1) / 2 - n / 96)
    pct = lambda *a, **k: round(100 * cost.routing_flop_ratio(*a, **k), 2)  # noqa: E731
    assert (pct(512, 48, 4), pct(512, 48, 8), pct(768, 48, 4)) == (0.24, 0.43, 0.16)
    assert (pct(512, 48, 4, kappa=6), pct(512, 48, 8, kappa=6), pct(768, 48, 4, kappa=6)) == (0.18, 0.32, 0.12)
    # With d_ff = 4d the ratio is delta / (2d).
    assert cost.routing_flop_ratio(512, 48, 4) == pytest.approx(cost.delta_sources(48, 4) / 1024)
    assert cost.routing_flop_ratio(512, 48, 4, d_ff=2048) == cost.routing_flop_ratio(512, 48, 4)


def test_model_flops_per_token():
    cfg = family("medium", 48, residual="standard")
    expected = 6 * (cost.param_count(cfg) - 256 * 512) + 6 * 48 * 512 * 512 + 6 * 256 * 512
    assert cost.model_flops_per_token(cfg, 512) == expected
    # By hand: 6 x 201,376,256 non-embedding + 6 x 48 x 512 x 512 attention + 6 x 256 x 512 head.
    assert expected == 1_208_257_536 + 75_497_472 + 786_432


def test_source_memory_bytes():
    B, T = 16, 512
    unit = B * T * 512 * 4
    assert cost.source_memory_bytes(family("medium", 48, residual="block_attnres"), B, T) == 5 * unit
    assert cost.source_memory_bytes(family("medium", 48, residual="haares"), B, T) == 9 * unit
    assert cost.source_memory_bytes(family("medium", 48, residual="haares", blocks=8), B, T, bytes_per_elem=2) == 17 * unit // 2
    for name in ("standard", "rezero", "layerscale"):
        assert cost.source_memory_bytes(family("medium", 48, residual=name), B, T) == 0


def test_bad_inputs_raise_haares_error():
    with pytest.raises(HaaresError, match="source counts"):
        cost.source_counts("standard", 48, 4)
    with pytest.raises(HaaresError, match="blocks"):
        cost.source_counts("haares", 48, 5)
    with pytest.raises(HaaresError, match="blocks"):
        cost.source_stats("block_attnres", 12, 8)  # 24 sublayers / 8 = 3, odd
