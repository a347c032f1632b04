"""The training loop in one process, on the real data layer (offline English, char) and tiny models.

Checks: weight decay lands exactly on the Linear weights and the tied embedding for every scheme;
a tiny model overfits one batch; per-scheme golden loss traces (tests/assets/losses/, rewrite with
HAARES_WRITE_GOLDEN=1) still match; the schemes of one pair see identical batches; a NaN loss fails
with NonFiniteLoss naming its step; the files a run writes; a run dir of another config is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from haares.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from haares.errors import HaaresError
from haares.model import GPT, build_model
from haares.residual import RESIDUALS
from haares.train import NonFiniteLoss, TrainCallbacks, make_optimizer, param_groups, train, train_step

GOLDEN_DIR = Path(__file__).parent / "assets" / "losses"
WRITE_GOLDEN = os.environ.get("HAARES_WRITE_GOLDEN") == "1"


def tiny_config(residual: str = "haares", *, steps: int = 12, eval_every: int = 4, **model: object) -> RunConfig:
    """d=32, 2 layers, N=2 blocks, T=16, batch 4 on the offline English corpus, 64 eval tokens."""
    return RunConfig(
        model=ModelConfig(d_model=32, d_ff=64, n_layers=2, n_heads=2, blocks=2, residual=residual, **model),
        data=DataConfig(dataset="offline_english", tokenizer="char", seq_len=16, eval_tokens=64),
        train=TrainConfig(steps=steps, batch_size=4, eval_every=eval_every, eval_batch_size=4, lr=3e-3),
        seed=42,
    )


SCHEME_VARIANTS = {name: {} for name in RESIDUALS} | {
    "haares_random_sign": {"residual": "haares", "detail": "random_sign"},
    "haares_fixed_bias": {"residual": "haares", "detail_bias": -2.0},
}


@pytest.mark.parametrize("variant", sorted(SCHEME_VARIANTS))
def test_decay_is_exactly_linear_weights_and_embedding(variant):
    fields = {"residual": variant, **SCHEME_VARIANTS[variant]}
    model = build_model(tiny_config(**fields).model, seed=0)
    groups = param_groups(model, TrainConfig(weight_decay=0.01))

    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    expected = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)} | {id(model.embed.weight)}
    assert decayed == expected
    assert all(g["weight_decay"] == 0.01 for g in groups if g["weight_decay"] > 0)

    listed = [id(p) for g in groups for p in g["params"]]
    assert len(listed) == len(set(listed)), "a parameter is in two groups"
    assert set(listed) == {id(p) for p in model.parameters()}, "a parameter is in no group"
    # Role, not ndim: LayerScale's (2L, D) gamma and every router/bias/gain stay undecayed.
    assert not decayed & {id(p) for p in model.residual.parameters()}
    make_optimizer(model, TrainConfig(), torch.device("cpu"))  # the groups are valid AdamW groups


def test_tiny_model_overfits_one_batch():
    from haares.data import TrainBatches, prepare

    cfg = tiny_config("haares")
    data = prepare(cfg.data, progress=False)
    batch = torch.from_numpy(TrainBatches(data.train, seq_len=32, batch_size=4, data_seed=0).batch(0))
    inputs, targets = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
    model = build_model(cfg.model, seed=0)
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2), torch.device("cpu"))
    losses = [
        train_step(model, optimizer, inputs, targets, grad_clip=1.0, precision="fp32")[0].item() for _ in range(40)
    ]
    assert losses[0] > 4.0
    assert losses[-1] < 0.1 * losses[0], losses[::5]


def _trace(cfg: RunConfig, run_dir: Path) -> dict:
    steps: list[float] = []
    callbacks = TrainCallbacks(on_progress=lambda step, loss, tps: steps.append(loss), progress_interval_s=0)
    result = train(cfg, device="cpu", run_dir=run_dir, callbacks=callbacks)
    return {"train_loss": steps, "val_loss": [p.val_loss for p in result.evals]}


@pytest.mark.parametrize("scheme", sorted(RESIDUALS))
def test_golden_loss_trace(scheme, tmp_path):
    cfg = tiny_config(scheme, steps=8, eval_every=4)
    got = _trace(cfg, tmp_path / "run")
    path = GOLDEN_DIR / f"{scheme}.json"
    if WRITE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": cfg.to_dict(), **got}, indent=1) + "\n")
    golden = json.loads(path.read_text())
    assert golden["config"] == cfg.to_dict(), "the golden trace was written for another config"
    assert len(got["train_loss"]) == 8 and len(got["val_loss"]) == 2
    # A tolerance for other CPUs' kernels; a numerics change moves these by far more.
    assert got["train_loss"] == pytest.approx(golden["train_loss"], abs=2e-4)
    assert got["val_loss"] == pytest.approx(golden["val_loss"], abs=2e-4)


def test_schemes_of_one_pair_see_identical_batches(tmp_path, monkeypatch):
    from haares.data import TrainBatches

    seen: list[tuple[int, str]] = []
    original = TrainBatches.batch

    def spy(self, step):
        arr = original(self, step)
        seen.append((step, hashlib.sha256(arr.tobytes()).hexdigest()))
        return arr

    monkeypatch.setattr(TrainBatches, "batch", spy)
    results, batches = {}, {}
    for scheme in ("standard", "haares"):
        seen.clear()
        results[scheme] = train(tiny_config(scheme, steps=6, eval_every=3), device="cpu", run_dir=tmp_path / scheme)
        batches[scheme] = list(seen)
    assert batches["standard"] == batches["haares"]
    assert [s for s, _ in batches["haares"]] == list(range(6))
    assert results["standard"].batch_order_hash == results["haares"].batch_order_hash

    other = tiny_config("haares", steps=6, eval_every=3)
    other = other.override({"data.data_seed": 7})
    assert train(other, device="cpu", run_dir=tmp_path / "seed7").batch_order_hash != results["haares"].batch_order_hash


def test_nan_loss_raises_naming_its_step(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = GPT.forward

    def forward(self, idx, targets=None):
        logits, loss = original(self, idx, targets)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 5:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", forward)
    with pytest.raises(NonFiniteLoss, match=r"at step 5\b") as info:
        train(tiny_config("haares", steps=10, eval_every=3), device="cpu", run_dir=tmp_path / "run")
    assert info.value.step == 5 and math.isnan(info.value.value)


def test_huge_learning_rate_diverges_with_non_finite_loss(tmp_path):
    cfg = tiny_config("standard", steps=30, eval_every=30).override({"train.lr": 1e6, "train.grad_clip": 1e9})
    with pytest.raises(NonFiniteLoss) as info:
        train(cfg, device="cpu", run_dir=tmp_path / "run")
    assert 1 <= info.value.step <= 30 and f"step {info.value.step}" in str(info.value)


def test_run_files_and_result(tmp_path):
    cfg = tiny_config("block_attnres", steps=8, eval_every=3)
    evals = []
    result = train(cfg, device="cpu", run_dir=tmp_path / "run", callbacks=TrainCallbacks(on_eval=evals.append))

    assert [p.step for p in result.evals] == [3, 6, 8] and evals == result.evals
    best = min(result.evals, key=lambda p: p.val_loss)
    assert (result.best_val_loss, result.best_step, result.final_step) == (best.val_loss, best.step, 8)
    for point in result.evals:
        assert point.tokens == point.step * 4 * 16
        assert point.val_ppl == pytest.approx(math.exp(point.val_loss))
        assert point.val_bpb > 0 and point.steps_per_s > 0 and point.peak_mem_bytes > 0
    assert result.evals[0].train_seconds < result.evals[-1].train_seconds

    lines = [json.loads(line) for line in (tmp_path / "run" / "evals.jsonl").read_text().splitlines()]
    assert [line["val_loss"] for line in lines] == [p.val_loss for p in result.evals]
    summary = json.loads(result.summary.read_text())
    assert summary["run_key"] == cfg.run_key() and summary["config"] == cfg.to_dict()
    assert summary["batch_order_hash"] == result.batch_order_hash
    assert summary["best_val_loss"] == result.best_val_loss and summary["final_step"] == 8
    assert summary["complete"] is True and summary["code"]["haares"] and summary["torch"] == torch.__version__
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step_00000006.ckpt", "step_00000008.ckpt"]


def test_finished_run_is_not_trained_again(tmp_path, monkeypatch):
    cfg = tiny_config("standard", steps=4, eval_every=2)
    first = train(cfg, device="cpu", run_dir=tmp_path / "run")

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run trained again")

    monkeypatch.setattr("haares.train.train_step", no_training)
    again = train(cfg, device="cpu", run_dir=tmp_path / "run")
    assert again.evals == first.evals and again.best_val_loss == first.best_val_loss


def test_run_dir_of_another_config_is_refused_and_left_alone(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_config("standard", steps=4, eval_every=2), device="cpu", run_dir=run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(HaaresError, match="run_key"):
        train(tiny_config("haares", steps=4, eval_every=2), device="cpu", run_dir=run_dir)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    # resume=False starts over in the same folder.
    fresh = train(tiny_config("haares", steps=4, eval_every=2), device="cpu", run_dir=run_dir, resume=False)
    assert fresh.final_step == 4


def test_bad_device_is_a_user_error(tmp_path):
    with pytest.raises(HaaresError, match="device"):
        train(tiny_config(steps=2, eval_every=2), device="tpu", run_dir=tmp_path / "run")
