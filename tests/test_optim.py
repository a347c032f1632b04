"""Muon and the Muon + AdamW optimizer (haares/optim.py, train.make_optimizer): the quintic
Newton-Schulz iteration orthogonalises (singular values near 1, direction kept), one Muon step
equals a direct transcription of its update rule, parameters split by role (2-D backbone Linear
weights to Muon, everything else to AdamW, each exactly once), state round-trips through
state_dict, the AdamW path is still a plain AdamW, and a tiny model trains under Muon.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from haares.config import ConfigError, ModelConfig, TrainConfig
from haares.model import build_model
from haares.optim import Muon, MuonWithAdamW, orthogonalise
from haares.residual import RESIDUALS
from haares.step import TrainStep
from haares.train import make_optimizer

torch.set_num_threads(1)
MUON = TrainConfig(optimizer="muon", lr=1e-3, muon_lr=0.02, weight_decay=0.01)


def tiny(residual: str = "standard", **kw) -> ModelConfig:
    return ModelConfig(**{**dict(vocab_size=32, d_model=32, n_layers=2, n_heads=2, d_ff=64, blocks=2, residual=residual), **kw})


@pytest.mark.parametrize("shape", [(16, 48), (48, 16), (32, 32)])
def test_orthogonalise_brings_singular_values_near_one(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    o = orthogonalise(g, steps=5)
    assert o.shape == g.shape and o.dtype == torch.float32
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.5 and s.max() < 1.3, s  # the quintic trades exactness for speed
    # Same singular vectors: O is close to U V^T of the input.
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cos = (o * (u @ vh)).sum() / (o.norm() * (u @ vh).norm())
    assert cos > 0.95
    with pytest.raises(ValueError, match="2-D"):
        orthogonalise(torch.zeros(3), steps=5)


def test_orthogonalise_of_a_batch_is_each_matrix_orthogonalised():
    for shape in [(5, 16, 48), (5, 48, 16)]:
        g = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
        one_by_one = torch.stack([orthogonalise(m, steps=5) for m in g])
        torch.testing.assert_close(orthogonalise(g, steps=5), one_by_one, rtol=1e-5, atol=1e-6)


def test_muon_steps_each_matrix_as_alone_when_shapes_are_stacked():
    # Three shapes, several matrices each (as in a model), stepped together: each one must follow its
    # own per-matrix transcription, so stacking by shape changes how the step runs, not what it does.
    gen = torch.Generator().manual_seed(3)
    shapes = [(24, 8), (8, 24), (24, 8), (16, 16), (8, 24), (24, 8)]
    w0 = [torch.randn(*s, generator=gen) for s in shapes]
    grads = [[torch.randn(*s, generator=gen) for s in shapes] for _ in range(3)]
    params = [nn.Parameter(w.clone()) for w in w0]
    opt = Muon(params, lr=0.1, momentum=0.9, ns_steps=5, weight_decay=0.5)
    w, bufs = [x.clone() for x in w0], [torch.zeros_like(x) for x in w0]
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(step_grads):
            bufs[i] = 0.9 * bufs[i] + g
            scale = max(1.0, shapes[i][0] / shapes[i][1]) ** 0.5
            w[i] = w[i] * (1 - 0.1 * 0.5) - 0.1 * orthogonalise(g + 0.9 * bufs[i], steps=5) * scale
    for p, expected in zip(params, w, strict=True):
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(opt.state[p]["momentum_buffer"], b) for p, b in zip(params, bufs, strict=True))


def test_muon_step_matches_direct_transcription():
    gen = torch.Generator().manual_seed(1)
    w0 = torch.randn(24, 8, generator=gen)
    grads = [torch.randn(24, 8, generator=gen) for _ in range(3)]
    p = nn.Parameter(w0.clone())
    opt = Muon([p], lr=0.1, momentum=0.9, ns_steps=5, weight_decay=0.5)
    w, buf = w0.clone(), torch.zeros_like(w0)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        buf = 0.9 * buf + g
        w = w * (1 - 0.1 * 0.5) - 0.1 * orthogonalise(g + 0.9 * buf, steps=5) * (24 / 8) ** 0.5
    torch.testing.assert_close(p.detach(), w)


@pytest.mark.parametrize("residual", list(RESIDUALS))
def test_muon_takes_exactly_the_backbone_linear_weights(residual):
    model = build_model(tiny(residual, value_residual=True, attn_gate=True), seed=0)
    opt = make_optimizer(model, MUON, torch.device("cpu"))
    assert isinstance(opt, MuonWithAdamW)
    muon_ids = [id(p) for g in opt.muon.param_groups for p in g["params"]]
    adamw_ids = [id(p) for g in opt.adamw.param_groups for p in g["params"]]
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    assert muon_ids and set(muon_ids) == linear and len(muon_ids) == len(linear)
    assert not set(muon_ids) & set(adamw_ids)
    assert sorted(muon_ids + adamw_ids) == sorted(id(p) for p in model.parameters())
    # Role, not ndim: 2-D non-Linear parameters (embedding, gates, scheme matrices) stay on AdamW.
    two_d_elsewhere = {id(p) for p in model.parameters() if p.ndim == 2} - linear
    assert id(model.embed.weight) in two_d_elsewhere and two_d_elsewhere <= set(adamw_ids)
    decayed = {id(p) for g in opt.adamw.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model.embed.weight)}
    assert {g["lr"] for g in opt.muon.param_groups} == {0.02} and {g["lr"] for g in opt.adamw.param_groups} == {1e-3}


def test_adamw_path_is_a_plain_adamw():
    opt = make_optimizer(build_model(tiny(), seed=0), TrainConfig(), torch.device("cpu"))
    assert type(opt) is torch.optim.AdamW


def _batch(seed: int = 0):
    """(4, 17) tokens: inputs are [:, :-1], targets [:, 1:]."""
    return torch.randint(0, 32, (4, 17), generator=torch.Generator().manual_seed(seed))


def train_step(model, optimizer, tokens):
    """One step of the trainer's own TrainStep; returns the loss."""
    return TrainStep(model, optimizer, grad_clip=1.0, precision="fp32")(tokens)[0]


def test_state_dict_round_trip_continues_identically():
    tokens = _batch()
    a = build_model(tiny(), seed=0)
    opt_a = make_optimizer(a, MUON, torch.device("cpu"))
    for _ in range(2):
        train_step(a, opt_a, tokens)
    b = build_model(tiny(), seed=1)
    b.load_state_dict(a.state_dict())
    opt_b = make_optimizer(b, MUON, torch.device("cpu"))
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # a copy: loading may alias the tensors
    assert set(opt_a.state_dict()) == {"adamw", "muon"} and opt_a.state_dict()["muon"]["state"]
    la = train_step(a, opt_a, tokens)
    lb = train_step(b, opt_b, tokens)
    assert torch.equal(la, lb)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_tiny_model_trains_under_muon():
    tokens = _batch()
    model = build_model(tiny(), seed=0)
    opt = make_optimizer(model, TrainConfig(optimizer="muon", lr=1e-2, muon_lr=0.05), torch.device("cpu"))
    losses = [train_step(model, opt, tokens).item() for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses[::5]


def test_config_checks_the_optimizer_fields():
    with pytest.raises(ConfigError, match="train.optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ConfigError, match="muon_momentum"):
        TrainConfig(muon_momentum=1.0)
