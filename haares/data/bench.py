"""Data benchmark: char counting/encoding and BPE training/encoding throughput on the offline English corpus.

Run: `python -m haares.data.bench [--repeat 3]`; prints a markdown table for docs/benchmarks.md.
A command, not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np


def _best(fn, repeat: int) -> float:  # noqa: ANN001 - a no-argument callable
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="take the best of N runs")
    args = parser.parse_args()

    from haares.data.bpe import BpeTokenizer
    from haares.data.char import CharTokenizer
    from haares.data.offline import load_offline
    from haares.data.pipeline import chunk_docs, count_chunk, default_workers, encode_chunk, parallel_map

    corpus = load_offline("offline_english")
    docs = corpus.train.docs + corpus.validation.docs
    text = "".join(d + "\n\n" for d in docs)
    n = len(text)
    workers = default_workers()
    chunks = list(chunk_docs([docs], joiner="\n\n", chunk_chars=n // (2 * workers) + 1))

    counts = count_chunk(text)
    tok = CharTokenizer.train(counts)
    chars = tuple(tok.chars)
    rows = [
        ("char count, 1 process", _best(lambda: count_chunk(text), args.repeat)),
        ("char encode, 1 process", _best(lambda: tok.encode_array(text), args.repeat)),
        (
            f"char encode, pool of {workers} (incl. pool start)",
            _best(lambda: list(parallel_map(encode_chunk, ((m, (chars, t)) for m, t in chunks), workers=workers, min_items=1)), args.repeat),
        ),
    ]
    bpe_train = _best(lambda: BpeTokenizer.train(docs), 1)
    bpe = BpeTokenizer.train(docs)
    rows.append(("BPE-4096 train", bpe_train))
    rows.append(("BPE encode_batch (per document)", _best(lambda: bpe.encode_batch(docs), args.repeat)))

    from haares.config import DataConfig
    from haares.data.cache import prepare

    for kind in ("char", "bpe4096"):
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["HAARES_DATA_CACHE"] = tmp
            start = time.perf_counter()
            prepare(DataConfig(dataset="offline_english", tokenizer=kind), progress=False)
            rows.append((f"`prepare` offline_english {kind} (cold cache, end to end)", time.perf_counter() - start))
    os.environ.pop("HAARES_DATA_CACHE", None)

    print(f"corpus: offline_english, {n:,} characters ({len(text.encode()):,} bytes), {len(docs)} files")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores ({workers} usable), python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print()
    print("| step | seconds | M chars/s |")
    print("| --- | ---: | ---: |")
    for name, secs in rows:
        print(f"| {name} | {secs:.3f} | {n / secs / 1e6:.1f} |")
    ids = np.asarray(bpe.encode(text[:1_000_000]))
    print(f"\nBPE: vocab {bpe.vocab_size}, {1_000_000 / len(ids):.2f} characters per token on the first 1M characters")


if __name__ == "__main__":
    main()
