"""Paired batches and the fixed eval set: batch(k) is a pure function of (data_seed, k, tokens), equal
in a fresh process and after a resume; order_hash ignores model seed and scheme; EvalSet windows,
caps, token and byte counts, and the too-short error."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from haares.config import RunConfig
from haares.data import EvalSet, TrainBatches
from haares.data.bpe import BpeTokenizer
from haares.data.char import CharTokenizer, count_chars
from haares.errors import HaaresError


@pytest.fixture
def tokens(tmp_path) -> np.ndarray:
    arr = np.random.default_rng(0).integers(0, 256, size=50_000).astype(np.uint16)
    path = tmp_path / "train.bin"
    arr.tofile(path)
    return np.memmap(path, dtype=np.uint16, mode="r")


def _digest(batches: list[np.ndarray]) -> str:
    return hashlib.sha256(b"".join(b.tobytes() for b in batches)).hexdigest()


def test_batch_shape_and_windows(tokens):
    tb = TrainBatches(tokens, seq_len=16, batch_size=4, data_seed=42)
    b = tb.batch(7)
    assert b.shape == (4, 17) and b.dtype == np.int64
    for row, start in zip(b, tb.starts(7), strict=True):
        assert np.array_equal(row, tokens[start : start + 17])
    assert tb.starts(7).max() <= len(tokens) - 17


def test_batch_is_the_same_in_a_fresh_process_and_after_resume(tokens, tmp_path):
    steps = [0, 1, 99, 12345]
    tb = TrainBatches(tokens, seq_len=32, batch_size=8, data_seed=42)
    here = _digest([tb.batch(k) for k in steps])
    # "Resume": a new object asked for later steps directly, without replaying earlier ones.
    resumed = TrainBatches(tokens, seq_len=32, batch_size=8, data_seed=42)
    assert _digest([resumed.batch(k) for k in steps]) == here
    code = (
        "import hashlib, numpy as np; from haares.data import TrainBatches\n"
        f"t = np.memmap({str(tmp_path / 'train.bin')!r}, dtype=np.uint16, mode='r')\n"
        "tb = TrainBatches(t, seq_len=32, batch_size=8, data_seed=42)\n"
        f"print(hashlib.sha256(b''.join(tb.batch(k).tobytes() for k in {steps})).hexdigest())\n"
        "print(tb.order_hash(50))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [here, tb.order_hash(50)]


def test_order_hash_depends_on_data_seed_only(tokens):
    base = RunConfig()
    cfgs = [base, base.override({"seed": 123, "model.residual": "standard"}), base.override({"seed": 2026})]
    hashes = {
        TrainBatches(tokens, seq_len=16, batch_size=4, data_seed=c.data.data_seed).order_hash(200) for c in cfgs
    }
    assert len(hashes) == 1  # model seed and scheme do not enter the batch order
    other = TrainBatches(tokens, seq_len=16, batch_size=4, data_seed=7).order_hash(200)
    assert other not in hashes
    assert TrainBatches(tokens, seq_len=16, batch_size=4, data_seed=42).order_hash(199) not in hashes
    assert not np.array_equal(TrainBatches(tokens, seq_len=16, batch_size=4, data_seed=42).batch(0),
                              TrainBatches(tokens, seq_len=16, batch_size=4, data_seed=42).batch(1))  # fmt: skip


def test_too_short_train_split():
    with pytest.raises(HaaresError, match="fewer than one sequence"):
        TrainBatches(np.zeros(10, dtype=np.uint16), seq_len=16, batch_size=2, data_seed=42)


def _char_val(text: str) -> tuple[np.ndarray, CharTokenizer]:
    tok = CharTokenizer.train(count_chars(text))
    return tok.encode_array(text), tok


def test_eval_set_windows_and_cap():
    text = "The eval set reads the start of validation, in order. " * 40
    val, tok = _char_val(text)
    es = EvalSet(val, seq_len=10, batch_size=3, eval_tokens=45, tokenizer=tok)
    assert es.n_seqs == 4 and es.n_tokens == 40 and len(es) == 2
    batches = list(es.batches())
    assert [b.shape for b in batches] == [(3, 11), (1, 11)] and batches[0].dtype == np.int64
    stacked = np.concatenate(batches)
    assert np.array_equal(stacked.reshape(-1), val[:44])  # non-overlapping windows of T+1 from the start
    targets = stacked[:, 1:].reshape(-1)
    assert es.n_bytes == len(tok.decode(targets).encode()) == 40
    whole = EvalSet(val, seq_len=10, batch_size=3, eval_tokens=0, tokenizer=tok)
    assert whole.n_seqs == len(val) // 11
    assert list(EvalSet(val, seq_len=10, batch_size=3, eval_tokens=45, tokenizer=tok).batches())[0].tobytes() == batches[0].tobytes()


def test_eval_set_bytes_with_multibyte_text():
    text = "naïve café ☃ 日本語 " * 30
    val, tok = _char_val(text)
    es = EvalSet(val, seq_len=8, batch_size=2, eval_tokens=0, tokenizer=tok)
    targets = np.concatenate(list(es.batches()))[:, 1:].reshape(-1)
    assert es.n_bytes == len(tok.decode(targets).encode()) > es.n_tokens
    bpe = BpeTokenizer.train([text] * 5)
    ids = np.array(bpe.encode(text), dtype=np.uint16)
    es_bpe = EvalSet(ids, seq_len=4, batch_size=2, eval_tokens=0, tokenizer=bpe)
    all_targets = np.concatenate(list(es_bpe.batches()))[:, 1:].reshape(-1)
    assert es_bpe.n_bytes == int(bpe.token_bytes()[all_targets].sum()) > es_bpe.n_tokens


def test_eval_set_too_short_is_one_line_error():
    val, tok = _char_val("short")
    with pytest.raises(HaaresError, match="validation split has 5 tokens") as err:
        EvalSet(val, seq_len=16, batch_size=2, eval_tokens=0, tokenizer=tok)
    assert "\n" not in str(err.value)
