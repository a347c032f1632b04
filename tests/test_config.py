"""Config: JSON round trip, run keys, dotted overrides and validation (model-spec.md section 0)."""

from __future__ import annotations

import json

import pytest

from haares.config import ConfigError, ModelConfig, RunConfig, parse_override


def test_json_round_trip_and_key_stable():
    cfg = RunConfig().override({"model.blocks": 6, "train.precision": "bf16", "seed": 123})
    again = RunConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    assert again.run_key() == cfg.run_key()
    assert len(cfg.run_key()) == 16


def test_any_config_change_changes_the_key():
    base = RunConfig()
    keys = {
        base.run_key(),
        base.override({"train.steps": 200}).run_key(),
        base.override({"data.eval_tokens": 0}).run_key(),
        base.override({"train.precision": "bf16"}).run_key(),
        base.override({"seed": 7}).run_key(),
        base.override({"model.detail_bias": -2.0}).run_key(),
    }
    assert len(keys) == 6


def test_override_coerces_ints_to_floats_and_rejects_wrong_types():
    cfg = RunConfig().override({"train.lr": 1, "model.detail_bias": -4})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.model.detail_bias == -4.0
    with pytest.raises(ConfigError, match="train.steps"):
        RunConfig().override({"train.steps": "many"})
    with pytest.raises(ConfigError, match="unknown config key"):
        RunConfig().override({"model.width": 3})
    with pytest.raises(ConfigError, match="unknown config keys"):
        RunConfig.from_dict({"model": {"nope": 1}})


@pytest.mark.parametrize(
    ("n_layers", "blocks", "ok"),
    [(48, 4, True), (48, 6, True), (48, 8, True), (2, 2, True), (2, 4, False), (6, 4, False), (4, 2, True), (12, 4, True), (48, 5, False), (4, 8, False)],
)
def test_block_count_must_give_whole_even_blocks(n_layers, blocks, ok):
    if ok:
        assert ModelConfig(n_layers=n_layers, blocks=blocks, d_model=32, n_heads=2).sublayers_per_block % 2 == 0
    else:
        with pytest.raises(ConfigError, match="whole even number"):
            ModelConfig(n_layers=n_layers, blocks=blocks, d_model=32, n_heads=2)


def test_block_count_is_not_checked_for_schemes_without_blocks():
    ModelConfig(residual="standard", n_layers=3, blocks=4, d_model=32, n_heads=2)


def test_choices_are_validated():
    with pytest.raises(ConfigError, match="model.residual"):
        ModelConfig(residual="highway")
    with pytest.raises(ConfigError, match="detail_bias"):
        ModelConfig(detail_bias="sometimes")
    with pytest.raises(ConfigError, match="train.precision"):
        RunConfig().override({"train.precision": "fp16"})


def test_layerscale_depth_rule():
    assert ModelConfig(n_layers=12).resolved_layerscale_init == 0.1
    assert ModelConfig(n_layers=24).resolved_layerscale_init == 1e-5
    assert ModelConfig(n_layers=48).resolved_layerscale_init == 1e-6
    assert ModelConfig(n_layers=48, layerscale_init=0.5).resolved_layerscale_init == 0.5


def test_parse_override():
    assert parse_override("train.steps=200") == ("train.steps", 200)
    assert parse_override("model.residual=haares") == ("model.residual", "haares")
    assert parse_override("model.rms_match=false") == ("model.rms_match", False)
    with pytest.raises(ConfigError):
        parse_override("train.steps")
