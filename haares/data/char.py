"""The paper's character tokenizer: 4 specials + the 252 most frequent characters of the training text.

Counting and encoding work on code-point arrays (numpy), never a Python loop per character.
Unknown characters map to <unk>. Saved as JSON beside the token cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD, UNK, BOS, EOS = range(4)
VOCAB_SIZE = 256
N_CHARS = VOCAB_SIZE - len(SPECIALS)  # 252
MAX_CODE_POINT = 0x110000
UNK_TEXT = "\ufffd"  # what <unk> decodes to (3 UTF-8 bytes)


def code_points(text: str) -> np.ndarray:
    """(len(text),) uint32 code points of a str, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def count_chars(text: str) -> np.ndarray:
    """(0x110000,) int64 count of each code point in `text` (add these across chunks)."""
    return np.bincount(code_points(text), minlength=MAX_CODE_POINT).astype(np.int64)


def top_chars(counts: np.ndarray) -> list[str]:
    """The (at most) 252 most frequent characters: count descending, ties by code point ascending."""
    present = np.flatnonzero(counts)
    # lexsort sorts by the last key first: -count, then code point.
    order = present[np.lexsort((present, -counts[present]))]
    return [chr(int(cp)) for cp in order[:N_CHARS]]


class CharTokenizer:
    """ids 0-3 are <pad> <unk> <bos> <eos>; ids 4.. are `chars` in frequency order; vocab_size is 256."""

    kind = "char"

    def __init__(self, chars: list[str]) -> None:
        if len(chars) > N_CHARS or len(set(chars)) != len(chars):
            raise ValueError(f"need at most {N_CHARS} distinct characters, got {len(chars)}")
        self.chars = list(chars)
        self.vocab_size = VOCAB_SIZE
        # Code point -> id lookup (2.2 MB); everything not listed is <unk>.
        self._table = np.full(MAX_CODE_POINT, UNK, dtype=np.uint16)
        for i, ch in enumerate(self.chars):
            self._table[ord(ch)] = len(SPECIALS) + i
        # Id -> decoded text; unused ids (fewer than 252 distinct characters) decode to "".
        strings = ["", UNK_TEXT, "", ""] + self.chars + [""] * (N_CHARS - len(self.chars))
        self._strings = np.array(strings, dtype=object)

    @classmethod
    def train(cls, counts: np.ndarray) -> CharTokenizer:
        """From summed `count_chars` of the training text."""
        return cls(top_chars(counts))

    def encode_array(self, text: str) -> np.ndarray:
        """(len(text),) uint16 ids."""
        return self._table[code_points(text)]

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: list[int] | np.ndarray) -> str:
        """Specials other than <unk> decode to ""; <unk> to U+FFFD."""
        return "".join(self._strings[np.asarray(ids, dtype=np.int64)])

    def token_bytes(self) -> np.ndarray:
        """(vocab_size,) int64 UTF-8 byte length of each id's decoded text (for bits per byte)."""
        return np.array([len(s.encode()) for s in self._strings], dtype=np.int64)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"type": "char", "specials": list(SPECIALS), "chars": self.chars}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> CharTokenizer:
        raw = json.loads(path.read_text())
        if raw.get("type") != "char" or tuple(raw.get("specials", ())) != SPECIALS:
            raise ValueError(f"{path} is not a char tokenizer file")
        return cls(raw["chars"])
