"""Checkpoint files: atomic checksummed writes, keep-last-two, and detection of damaged files.

Checks against the contract in haares/checkpoint.py: a truncated or bit-flipped file is never
loaded, a warning names it and the previous checkpoint is used; RNG states round-trip exactly.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from haares.checkpoint import (
    CorruptCheckpoint,
    atomic_write_text,
    checkpoint_path,
    list_checkpoints,
    load_latest_checkpoint,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _state(step: int) -> dict:
    gen = torch.Generator().manual_seed(step)
    return {"step": step, "weights": torch.randn(64, 8, generator=gen), "evals": [{"step": step, "loss": 1.5}]}


def test_round_trip_and_names_include_step(tmp_path):
    path = save_checkpoint(tmp_path, step=7, state=_state(7))
    assert path == checkpoint_path(tmp_path, 7) and "00000007" in path.name
    loaded = read_checkpoint(path)
    assert loaded["step"] == 7 and torch.equal(loaded["weights"], _state(7)["weights"])
    assert loaded["evals"] == [{"step": 7, "loss": 1.5}]
    # No temp files are left behind.
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_keeps_the_newest_two(tmp_path):
    for step in (5, 10, 15, 20):
        save_checkpoint(tmp_path, step=step, state=_state(step))
    assert [s for s, _ in list_checkpoints(tmp_path)] == [15, 20]


def test_truncated_newest_is_skipped_with_warning_and_previous_used(tmp_path):
    save_checkpoint(tmp_path, step=5, state=_state(5))
    newest = save_checkpoint(tmp_path, step=10, state=_state(10))
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="step_00000010"):
        path, state = load_latest_checkpoint(tmp_path)
    assert path == checkpoint_path(tmp_path, 5) and state["step"] == 5


def test_bit_flip_is_detected(tmp_path):
    path = save_checkpoint(tmp_path, step=3, state=_state(3))
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match="sha256"):
        read_checkpoint(path)
    with pytest.warns(RuntimeWarning):
        assert load_latest_checkpoint(tmp_path) is None


def test_empty_and_missing_folders_have_no_checkpoint(tmp_path):
    assert load_latest_checkpoint(tmp_path / "nope") is None
    (tmp_path / "step_00000004.ckpt").write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="truncated"):
        assert load_latest_checkpoint(tmp_path) is None


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    cpu = torch.device("cpu")
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint(tmp_path, step=1, state={"rng": rng_state(cpu)})
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(read_checkpoint(checkpoint_path(tmp_path, 1))["rng"], cpu)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_atomic_write_text_replaces(tmp_path):
    target = tmp_path / "sub" / "summary.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]
