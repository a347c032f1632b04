"""Byte-level BPE (vocab 4096) with `tokenizers`: trained on the first 100M bytes of the training text.

Byte-level, so every string round-trips exactly and there is never an unknown token.
Saved as tokenizer.json beside the token cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

BPE_VOCAB_SIZE = 4096
BPE_TRAIN_BYTES = 100_000_000
ENDOFTEXT = "<|endoftext|>"  # id 0; reserved, never inserted between documents


def first_bytes(docs: Iterable[str], limit: int) -> Iterator[str]:
    """Documents in order until `limit` UTF-8 bytes are reached (the last one cut at the limit)."""
    seen = 0
    for doc in docs:
        size = len(doc.encode())
        if seen + size >= limit:
            yield doc.encode()[: limit - seen].decode("utf-8", "ignore")
            return
        seen += size
        yield doc


class BpeTokenizer:
    """A `tokenizers.Tokenizer` with the project's small interface (vocab_size, encode, decode)."""

    kind = "bpe4096"

    def __init__(self, tok) -> None:  # noqa: ANN001 - tokenizers.Tokenizer
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def train(cls, docs: Iterable[str], *, vocab_size: int = BPE_VOCAB_SIZE, max_bytes: int = BPE_TRAIN_BYTES) -> BpeTokenizer:
        """Train on the first `max_bytes` of `docs` (data.md A, "Training a ByteLevel BPE")."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=[ENDOFTEXT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no UNK ever
            show_progress=False,
        )
        tok.train_from_iterator(first_bytes(docs, max_bytes), trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """uint16 ids of each text (tokenizers parallelises this over the cores itself)."""
        return [np.asarray(e.ids, dtype=np.uint16) for e in self.tok.encode_batch(texts)]

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_bytes(self) -> np.ndarray:
        """(vocab_size,) int64 byte length of each id (byte-level: each token is a fixed byte string)."""
        vocab = self.tok.get_vocab()
        out = np.zeros(self.vocab_size, dtype=np.int64)
        byte_of = {ch: b for b, ch in _byte_to_unicode().items()}
        for token, idx in vocab.items():
            if token == ENDOFTEXT:
                out[idx] = len(token.encode())  # never in the stream; decodes literally
            else:
                out[idx] = sum(1 for ch in token if ch in byte_of)
        return out

    def save(self, path: Path) -> None:
        self.tok.save(str(path))

    @classmethod
    def load(cls, path: Path) -> BpeTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map that ByteLevel uses."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))
