"""Batches for training (random windows, a pure function of data seed and step) and a fixed eval set.

TrainBatches has no iteration state: batch(k) is computed directly from (data_seed, k), so paired
runs and resumed runs see exactly the same batches. EvalSet is the first non-overlapping sequences
of the validation split, with the token and byte counts that bits per byte needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from haares.errors import HaaresError


class TrainBatches:
    """Random windows of seq_len+1 tokens from a 1-D token array.

    batch(step) -> (batch_size, seq_len+1) int64: inputs [:, :-1], targets [:, 1:].
    Window starts are drawn uniformly from [0, len(tokens) - seq_len - 1] by a generator seeded
    with (data_seed, step): independent of the model seed, scheme, and of any earlier step.
    """

    def __init__(self, tokens: np.ndarray, *, seq_len: int, batch_size: int, data_seed: int) -> None:
        if len(tokens) < seq_len + 1:
            raise HaaresError(
                f"the training split has {len(tokens)} tokens, fewer than one sequence of seq_len+1="
                f"{seq_len + 1}; use a larger dataset or a smaller --seq-len"
            )
        self.tokens = tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.data_seed = data_seed
        self._offsets = np.arange(seq_len + 1, dtype=np.int64)

    def starts(self, step: int) -> np.ndarray:
        """(batch_size,) int64 window starts of `step`."""
        rng = np.random.default_rng([self.data_seed, step])
        return rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size, dtype=np.int64)

    def batch(self, step: int) -> np.ndarray:
        """(batch_size, seq_len+1) int64 token ids of `step`."""
        idx = self.starts(step)[:, None] + self._offsets  # (B, T+1)
        return np.asarray(self.tokens[idx], dtype=np.int64)

    def order_hash(self, steps: int) -> str:
        """sha256 over (seq_len, batch_size, len(tokens)) and the window starts of steps 0..steps-1.

        Two runs with equal hashes saw the same batches in the same order (given the same tokens).
        """
        digest = hashlib.sha256(f"{self.seq_len},{self.batch_size},{len(self.tokens)}".encode())
        for step in range(steps):
            digest.update(self.starts(step).astype("<i8").tobytes())
        return digest.hexdigest()


class EvalSet:
    """Fixed, ordered, non-overlapping windows of seq_len+1 tokens from the start of the validation split.

    Window i covers tokens [i*(T+1), (i+1)*(T+1)); targets are its last T tokens. The number of
    windows is eval_tokens // T (at least 1), capped by the split; eval_tokens=0 takes them all.
    n_tokens: targets evaluated; n_bytes: UTF-8 bytes those targets decode to, so that
    val_bpb = total_nats / (ln 2 * n_bytes).
    """

    def __init__(self, tokens: np.ndarray, *, seq_len: int, batch_size: int, eval_tokens: int, tokenizer: Any) -> None:
        available = len(tokens) // (seq_len + 1)
        if available == 0:
            raise HaaresError(
                f"the validation split has {len(tokens)} tokens, fewer than one sequence of seq_len+1="
                f"{seq_len + 1}; use more validation text or a smaller --seq-len"
            )
        wanted = available if eval_tokens == 0 else max(1, eval_tokens // seq_len)
        self.n_seqs = min(wanted, available)
        self.seq_len = seq_len
        self.batch_size = batch_size
        # (n_seqs, T+1) view of the first n_seqs windows; a memmap stays on disk until read.
        self._windows = tokens[: self.n_seqs * (seq_len + 1)].reshape(self.n_seqs, seq_len + 1)
        self.n_tokens = self.n_seqs * seq_len
        byte_len = tokenizer.token_bytes()
        # Summed in slices so a whole-split eval (eval_tokens=0) never holds the split in memory twice.
        step = max(1, (1 << 22) // (seq_len + 1))
        self.n_bytes = int(
            sum(byte_len[np.asarray(self._windows[i : i + step, 1:], dtype=np.int64)].sum() for i in range(0, self.n_seqs, step))
        )

    def __len__(self) -> int:
        """Number of batches (the last one may hold fewer than batch_size sequences)."""
        return -(-self.n_seqs // self.batch_size)

    def batches(self) -> Iterator[np.ndarray]:
        """(B, T+1) int64 batches in order; B = batch_size except possibly the last."""
        for start in range(0, self.n_seqs, self.batch_size):
            yield np.asarray(self._windows[start : start + self.batch_size], dtype=np.int64)
