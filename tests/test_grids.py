"""Grid expansion: deterministic, paired runs differ only by their method, shared runs share a run key,
`seeds` only selects, config-changing options change keys, and unknown override paths raise."""

from __future__ import annotations

import pytest

from haares.config import ConfigError
from haares.errors import HaaresError
from haares.grids import GRIDS, expand, get_grid


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("name", list(GRIDS))
def test_expand_is_deterministic(name):
    first = [(r.cell, r.method, r.seed, r.pair_index, r.method_index, r.run_key) for r in expand(get_grid(name))]
    second = [(r.cell, r.method, r.seed, r.pair_index, r.method_index, r.run_key) for r in expand(get_grid(name))]
    assert first == second
    assert len({key for *_, key in first}) == len(first)  # no grid names one run twice


@pytest.mark.parametrize("name", list(GRIDS))
def test_pairs_differ_only_in_method_overrides(name):
    grid = get_grid(name)
    pairs: dict[int, list] = {}
    for run in expand(grid):
        pairs.setdefault(run.pair_index, []).append(run)
    assert len(pairs) == len(grid.cells) * len(grid.seeds)
    for runs in pairs.values():
        assert [r.method for r in runs] == list(grid.methods)
        assert len({(r.cell, r.seed) for r in runs}) == 1
        base = _flat(runs[0].config.to_dict())
        for run in runs[1:]:
            other = _flat(run.config.to_dict())
            changed = {k for k in base if base[k] != other[k]}
            allowed = set(grid.methods[runs[0].method]) | set(grid.methods[run.method])
            assert changed <= allowed, (run.method, changed - allowed)
            assert changed, "two methods of a pair must differ"


def test_medium_48l_haares_seed42_is_one_run_across_grids():
    keys = {}
    for name, cell in (("depth", "48L"), ("main48", ""), ("blocks", "n4"), ("ablations", "")):
        [run] = [r for r in expand(get_grid(name)) if r.method == "haares" and r.seed == 42 and r.cell == cell]
        keys[name] = run.run_key
    assert len(set(keys.values())) == 1, keys


def test_unknown_override_path_raises():
    with pytest.raises(ConfigError, match="train.nope"):
        expand(get_grid("main48"), overrides={"train.nope": 1})


def test_unknown_grid_and_foreign_seed_raise():
    with pytest.raises(HaaresError, match="unknown grid"):
        get_grid("main49")
    with pytest.raises(HaaresError, match="not in grid"):
        expand(get_grid("main48"), seeds=(7,))


def test_seeds_only_select():
    full = {(r.method, r.seed): r.run_key for r in expand(get_grid("main48"))}
    some = {(r.method, r.seed): r.run_key for r in expand(get_grid("main48"), seeds=(42,))}
    assert len(full) == 9 and len(some) == 3
    assert all(full[k] == v for k, v in some.items())
    # pair indices are positions in the whole grid, so a subset schedules like the whole
    assert {r.pair_index for r in expand(get_grid("main48"), seeds=(123,))} == {1}


def test_cells_only_select():
    full = {(r.cell, r.method, r.seed): (r.run_key, r.pair_index) for r in expand(get_grid("shakespeare"))}
    some = expand(get_grid("shakespeare"), cells=("48L",), seeds=(42,))
    assert len(full) == 27 and [(r.cell, r.seed) for r in some] == [("48L", 42)] * 3
    # the same keys and pair indices as in the whole grid: a subset pairs up with the rest later
    assert all(full[(r.cell, r.method, r.seed)] == (r.run_key, r.pair_index) for r in some)
    with pytest.raises(HaaresError, match="cells \\['96L'\\] are not in grid 'shakespeare'; its cells are 12L,24L,48L"):
        expand(get_grid("shakespeare"), cells=("96L",))


@pytest.mark.parametrize(
    "overrides",
    [{"train.steps": 100}, {"train.eval_every": 10}, {"data.eval_tokens": 0}, {"train.precision": "bf16"}],
)
def test_config_options_change_every_key(overrides):
    plain = [r.run_key for r in expand(get_grid("main48"))]
    changed = [r.run_key for r in expand(get_grid("main48"), overrides=overrides)]
    assert all(a != b for a, b in zip(plain, changed, strict=True))
