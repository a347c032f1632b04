"""Char tokenizer (exact top-252 choice, ties by code point, <unk>, round trip) and byte-level BPE-4096
(configured and trained size, byte-exact round trips, per-token byte lengths), on real text."""

from __future__ import annotations

import inspect
import json
import random
import textwrap

import numpy as np
import pytest

from haares.data.bpe import BPE_VOCAB_SIZE, BpeTokenizer, first_bytes
from haares.data.char import N_CHARS, SPECIALS, UNK, VOCAB_SIZE, CharTokenizer, count_chars

SAMPLES = [
    "Plain ASCII: the quick brown fox jumps over the lazy dog.\n",
    "Unicode: naïve café, Ελληνικά, 日本語のテキスト, emoji 🙂👍, combining é, \u200b zero width.\n",
    textwrap.dedent(inspect.getsource(textwrap.dedent)),
    "\t\tmixed\r\nline endings\rand trailing spaces   \n\n\n",
]


def _counted_text(n_distinct: int, seed: int = 0) -> tuple[str, dict[str, int]]:
    """A shuffled text in which character i occurs 1 + (7i mod 40) times: many ties."""
    counts = {chr(0x100 + i): 1 + (7 * i) % 40 for i in range(n_distinct)}
    chars = [c for c, n in counts.items() for _ in range(n)]
    random.Random(seed).shuffle(chars)
    return "".join(chars), counts


def test_char_picks_exactly_the_252_most_frequent_ties_by_code_point():
    text, counts = _counted_text(300)
    expected = sorted(counts, key=lambda c: (-counts[c], ord(c)))[:N_CHARS]
    # Counting over chunks (as the parallel builder does) must equal counting the whole text.
    total = count_chars(text[:1000]) + count_chars(text[1000:])
    tok = CharTokenizer.train(total)
    assert tok.chars == expected
    assert tok.vocab_size == VOCAB_SIZE == 256
    # A tie straddles the cut: the last kept and first dropped characters have equal counts.
    ranked = sorted(counts, key=lambda c: (-counts[c], ord(c)))
    assert counts[ranked[N_CHARS - 1]] == counts[ranked[N_CHARS]]
    assert ord(ranked[N_CHARS - 1]) < ord(ranked[N_CHARS])
    ids = np.array(tok.encode(text))
    assert ids.max() < VOCAB_SIZE
    kept = set(expected)
    # Exactly the dropped characters (and nothing else) become <unk>; no other special appears.
    assert ((ids == UNK) == np.array([c not in kept for c in text])).all()
    assert not np.isin(ids, [0, 2, 3]).any()


def test_char_round_trips_and_reloads(tmp_path):
    text = "".join(SAMPLES)
    tok = CharTokenizer.train(count_chars(text))
    assert len(tok.chars) == len(set(text)) < N_CHARS
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode_array(text).dtype == np.uint16
    tok.save(tmp_path / "tok.json")
    again = CharTokenizer.load(tmp_path / "tok.json")
    assert again.chars == tok.chars and again.encode(text) == ids
    assert json.loads((tmp_path / "tok.json").read_text())["specials"] == list(SPECIALS)
    # Byte lengths per id add up to the UTF-8 size of the decoded text.
    assert tok.token_bytes()[np.array(ids)].sum() == len(text.encode())


def test_char_unknown_characters_become_unk():
    tok = CharTokenizer.train(count_chars("abcabc"))
    assert tok.encode("abz") == [tok.encode("a")[0], tok.encode("b")[0], UNK]
    assert tok.decode([UNK]) == "\ufffd"


@pytest.fixture(scope="module")
def bpe_on_1mb() -> tuple[BpeTokenizer, int]:
    """BPE trained on ~1 MB of pydoc prose + stdlib code."""
    import json as json_mod
    import string
    from pydoc_data.topics import topics

    docs = [topics[k] for k in sorted(topics)] + [inspect.getsource(m) for m in (json_mod.decoder, string, textwrap)]
    docs = docs * 3
    size = sum(len(d.encode()) for d in docs)
    return BpeTokenizer.train(docs), size


def test_bpe_trains_to_4096_on_a_1mb_sample(bpe_on_1mb):
    tok, size = bpe_on_1mb
    assert BPE_VOCAB_SIZE == 4096
    assert size > 1_000_000
    assert tok.vocab_size == 4096


@pytest.mark.parametrize("text", SAMPLES, ids=["ascii", "unicode", "code", "whitespace"])
def test_bpe_round_trips_bytes_exactly(bpe_on_1mb, text, tmp_path):
    tok, _ = bpe_on_1mb
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(ids).encode() == text.encode()
    assert int(tok.token_bytes()[np.array(ids)].sum()) == len(text.encode())
    tok.save(tmp_path / "tokenizer.json")
    assert BpeTokenizer.load(tmp_path / "tokenizer.json").encode(text) == ids


def test_bpe_on_tiny_text_stays_within_the_cap():
    tok = BpeTokenizer.train(["tiny text, tiny text"])
    assert 256 < tok.vocab_size <= BPE_VOCAB_SIZE
    assert tok.decode(tok.encode("ünïcode tiny")) == "ünïcode tiny"


def test_first_bytes_stops_at_the_byte_limit():
    docs = ["aaaa", "ééé", "bbbb"]
    out = list(first_bytes(docs, 7))
    assert "".join(out).encode() == b"aaaa\xc3\xa9"  # 4 + 2 bytes; the half é is dropped
