"""Tokenize a split in parallel: documents -> text chunks -> worker processes -> uint16 arrays, in order.

At most 2 chunks per worker are in flight, so memory stays bounded on corpora of many GB.
Workers run functions of this module only (numpy, no torch, no datasets).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from haares.data.char import CharTokenizer, count_chars

CHUNK_CHARS = 4_000_000  # ~16 MB of code points per task: big enough to amortise the pickling
MIN_PARALLEL_CHUNKS = 4  # below ~12 MB of text one process is faster than starting a pool


def chunk_docs(
    batches: Iterable[list[str]], *, joiner: str, chunk_chars: int = CHUNK_CHARS
) -> Iterator[tuple[tuple[int, int], str]]:
    """((n_docs, n_doc_chars), text) chunks; text is each document followed by `joiner`, concatenated.

    n_doc_chars counts document characters only (not joiners), so empty text can be told apart.
    """
    parts: list[str] = []
    size = n = 0
    for batch in batches:
        for doc in batch:
            parts.append(doc + joiner)
            size += len(doc)
            n += 1
            if size >= chunk_chars:
                yield (n, size), "".join(parts)
                parts, size, n = [], 0, 0
    if n:
        yield (n, size), "".join(parts)


def parallel_map(
    fn: Callable[[Any], Any], items: Iterable[tuple[Any, Any]], *, workers: int, min_items: int = MIN_PARALLEL_CHUNKS
) -> Iterator[tuple[Any, Any]]:
    """(meta, fn(payload)) for (meta, payload) items, in input order.

    Runs in this process when there are fewer than `min_items` items or one worker (starting a
    pool costs about a second, more than numpy needs for a few MB); otherwise in a forkserver
    pool with a bounded window of pending tasks.
    """
    it = iter(items)
    head = []
    for item in it:
        head.append(item)
        if len(head) >= min_items:
            break
    if len(head) < min_items or workers <= 1:
        for meta, payload in [*head, *it]:
            yield meta, fn(payload)
        return
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(workers) as pool:
        pending: deque[tuple[Any, Any]] = deque()
        for meta, payload in _chain(head, it):
            pending.append((meta, pool.apply_async(fn, (payload,))))
            if len(pending) >= 2 * workers:
                done_meta, res = pending.popleft()
                yield done_meta, res.get()
        while pending:
            done_meta, res = pending.popleft()
            yield done_meta, res.get()


def _chain(head: list, rest: Iterator) -> Iterator:
    yield from head
    yield from rest


def default_workers() -> int:
    """One worker per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --- worker functions (module level so the pool can pickle them) -----------------------------

_TOKENIZERS: dict[tuple[str, ...], CharTokenizer] = {}


def count_chunk(text: str) -> np.ndarray:
    """(0x110000,) int64 code-point counts of one chunk."""
    return count_chars(text)


def encode_chunk(task: tuple[tuple[str, ...], str]) -> np.ndarray:
    """uint16 ids of one chunk; the char tokenizer (2.2 MB table) is built once per worker."""
    chars, text = task
    tok = _TOKENIZERS.get(chars)
    if tok is None:
        tok = _TOKENIZERS.setdefault(chars, CharTokenizer(list(chars)))
    return tok.encode_array(text)
