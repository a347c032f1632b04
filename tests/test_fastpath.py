"""The fast path is a config choice the trainer honours and records: resolution per device, process-wide
switches restored, the glue function's precision, and a CPU run on the fused router that matches the
reference run. (The CUDA graph and compilation need a GPU; their equivalence is `haares bench`'s.)"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json

import pytest
import torch
from fixtures.tiny import tiny_config

from haares.config import ConfigError, RunConfig, TrainConfig
from haares.errors import HaaresError
from haares.fastpath import FastPath, matmul_precision, resolve_fast_path
from haares.residual.compiled import CompiledFn
from haares.residual.haares import next_sources
from haares.train import train

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def test_auto_is_the_fast_path_on_cuda_and_the_reference_on_the_cpu(monkeypatch):
    assert resolve_fast_path(TrainConfig(), CUDA) == FastPath(router="triton_virtual", compile=True, cuda_graph=True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "triton" else real_find_spec(name))
    assert resolve_fast_path(TrainConfig(), CUDA).router == "fused", "without triton, Inductor's bodies"
    with pytest.raises(HaaresError, match=r"needs triton >= 3\.3 \(installed: none\)"):
        resolve_fast_path(TrainConfig(router="triton"), CUDA)
    monkeypatch.undo()
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "3.1.0")
    assert resolve_fast_path(TrainConfig(), CUDA).router == "fused", "a triton too old for the kernels"
    with pytest.raises(HaaresError, match=r"installed: 3\.1"):
        resolve_fast_path(TrainConfig(router="triton"), CUDA)
    monkeypatch.undo()
    assert resolve_fast_path(TrainConfig(), CPU) == FastPath(router="reference", compile=False, cuda_graph=False)
    explicit = TrainConfig(router="fused", compile=False, cuda_graph=False)
    assert resolve_fast_path(explicit, CUDA) == FastPath(router="fused", compile=False, cuda_graph=False)
    assert resolve_fast_path(explicit, CPU) == FastPath(router="fused", compile=False, cuda_graph=False)


def test_auto_leaves_muon_steps_eager_until_checked_on_a_gpu():
    muon = TrainConfig(optimizer="muon")
    assert resolve_fast_path(muon, CUDA) == FastPath(router="triton_virtual", compile=True, cuda_graph=False)
    assert resolve_fast_path(TrainConfig(optimizer="muon", cuda_graph=True), CUDA).cuda_graph
    assert resolve_fast_path(muon, CPU).cuda_graph is False


def test_new_fast_path_fields_stay_out_of_run_keys_at_their_defaults():
    cfg = tiny_config()
    assert "cuda_graph" not in cfg.to_json() and "router" not in cfg.to_json()
    explicit = RunConfig.from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "router": "fused"}})
    assert explicit.run_key() != cfg.run_key()


def test_a_cuda_graph_on_the_cpu_and_an_unknown_router_are_config_errors():
    with pytest.raises(HaaresError, match="cuda_graph=true needs a CUDA device"):
        resolve_fast_path(TrainConfig(cuda_graph=True), CPU)
    with pytest.raises(ConfigError, match="train.router"):
        TrainConfig(router="cutlass")


def test_fp32_scope_turns_tf32_off_and_restores_it():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with matmul_precision("fp32"):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_block_sums_accumulate_in_fp32_under_bf16():
    y = torch.randn(2, 3, 8, dtype=torch.bfloat16)
    plus, minus = torch.tensor(1.0), torch.tensor(-1.0)
    kw = {"rms_on": True, "eps": 1e-6, "max_scale": 10.0}
    b, d, d_hat, scale = next_sources(None, None, y, plus, b_half=None, detail="half_split", **kw)
    assert b.dtype == d_hat.dtype == scale.dtype == torch.float32 and d is None
    # Half-split past the flip: the detail is 2 b^(h) - b, from partials only (what the router rebuilds).
    b2, _, d_hat2, scale2 = next_sources(b, None, y, minus, b_half=b, detail="half_split", **kw)
    assert torch.equal(b2, 2 * y.float()) and torch.equal(d_hat2, (2 * b - b2) * scale2)
    # Other signs keep a running d, in fp32.
    b3, d3, _, _ = next_sources(None, None, y, minus, b_half=None, detail="random_sign", **kw)
    _, d4, _, _ = next_sources(b3, d3, y, minus, b_half=None, detail="random_sign", **kw)
    assert d4.dtype == torch.float32 and torch.equal(d4, -2 * y.float())
    # The ablations' detail slot: a copy of b, or raw d.
    dup = next_sources(b, None, y, minus, b_half=None, detail="dup_cumulative", **kw)
    assert dup[2] is dup[0] and dup[3] is None
    _, d5, raw, none = next_sources(b3, d3, y, minus, b_half=None, detail="random_sign", **{**kw, "rms_on": False})
    assert raw is d5 and none is None


def test_compile_glue_swaps_in_a_compiled_copy_of_the_same_function():
    from haares.model import build_model

    model = build_model(tiny_config("haares").model, seed=0)
    assert model.residual.next_sources is next_sources
    model.residual.compile_glue()
    assert isinstance(model.residual.next_sources, CompiledFn) and model.residual.next_sources.fn is next_sources


@pytest.mark.parametrize("scheme", ["block_attnres", "haares"])
def test_training_on_the_fused_router_matches_the_reference_and_is_recorded(scheme, tmp_path):
    reference = train(tiny_config(scheme, steps=8, eval_every=4), device="cpu", run_dir=tmp_path / "ref")
    cfg = tiny_config(scheme, steps=8, eval_every=4)
    fused_cfg = RunConfig.from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "router": "fused"}})
    fused = train(fused_cfg, device="cpu", run_dir=tmp_path / "fused")
    assert [p.step for p in fused.evals] == [4, 8]
    for a, b in zip(reference.evals, fused.evals, strict=True):
        assert a.val_loss == pytest.approx(b.val_loss, abs=1e-5)
        assert a.train_loss == pytest.approx(b.train_loss, abs=1e-5)
        assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-4)
    summary = json.loads(fused.summary.read_text())
    assert summary["fast_path"] == {"router": "fused", "compile": False, "cuda_graph": False}
    assert json.loads(reference.summary.read_text())["fast_path"]["router"] == "reference"


@pytest.mark.parametrize("router", ["fused", "triton", "triton_virtual"])
def test_a_preempted_run_on_the_fused_router_resumes_bitwise(tmp_path, router):
    """Exact resume holds on the fused router, on Inductor's bodies and on the Triton kernels (run by
    Triton's interpreter here): detail recipes, running gradient sums. A run stopped at step 2 and
    resumed ends bitwise where its uninterrupted twin does (4 steps: the interpreter is slow)."""
    from haares.train import Preempted, TrainCallbacks

    if router.startswith("triton"):
        pytest.importorskip("triton")  # run by Triton's interpreter (conftest.py sets TRITON_INTERPRET)
    cfg = tiny_config("haares", steps=4, eval_every=2)
    fused = RunConfig.from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "router": router}})
    twin = train(fused, device="cpu", run_dir=tmp_path / "twin")
    stop = []
    callbacks = TrainCallbacks(on_progress=lambda step, *_: stop.append(step >= 2), progress_interval_s=0)
    with pytest.raises(Preempted):
        train(fused, device="cpu", run_dir=tmp_path / "cut", callbacks=callbacks, should_stop=lambda: any(stop))
    resumed = train(fused, device="cpu", run_dir=tmp_path / "cut")
    assert [(p.step, p.val_loss, p.train_loss) for p in resumed.evals] == [
        (p.step, p.val_loss, p.train_loss) for p in twin.evals
    ]
    assert len(twin.evals) == 2
    assert json.loads(twin.summary.read_text())["fast_path"]["router"] == router
