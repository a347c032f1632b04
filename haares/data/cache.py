"""`prepare()`: text -> tokenizer -> memory-mapped uint16 token arrays, cached once per key.

The cache entry (train.bin, val.bin, tokenizer file, meta.json) is built under a FileLock into a
temporary folder, fsynced and renamed into place; an entry is trusted only if meta.json is
present and agrees with the files, so a crash mid-build leaves nothing that is used later.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from haares.config import DataConfig
from haares.data.bpe import BpeTokenizer
from haares.data.char import MAX_CODE_POINT, CharTokenizer
from haares.data.corpus import Corpus, DocSplit
from haares.data.pipeline import chunk_docs, count_chunk, default_workers, encode_chunk, parallel_map
from haares.data.registry import DatasetSpec, get_spec
from haares.durable import fsync_dir
from haares.errors import HaaresError
from haares.settings import data_cache_dir

CACHE_VERSION = 1
TOKEN_DTYPE = np.uint16
TOKENIZER_FILES = {"char": "tokenizer-char.json", "bpe4096": "tokenizer.json"}
BUILD_LOG = "builds.log"


@dataclass
class PreparedData:
    """A ready dataset: train/val token arrays ((N,) uint16 memmaps), its tokenizer and fingerprint."""

    train: np.ndarray
    val: np.ndarray
    tokenizer: Any
    fingerprint: str
    cache_dir: Path
    meta: dict = field(default_factory=dict)


def prepare(data: DataConfig, *, progress: bool = True, workers: int | None = None) -> PreparedData:
    """Load or build the token cache of `data` (dataset, path, tokenizer); see module docstring.

    workers: processes for char counting/encoding (default: the cores available).
    """
    spec = get_spec(data.dataset)
    key = cache_key(spec, path=data.path, tokenizer=data.tokenizer)
    root = data_cache_dir()
    entry = root / entry_name(spec.name, data.tokenizer, key)
    if _trusted(entry):
        return _open(entry)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry) + ".lock"):
        if _trusted(entry):  # another process built it while we waited
            return _open(entry)
        _remove_leftovers(entry)
        _build(spec, data, key=key, entry=entry, progress=progress, workers=workers or default_workers())
    return _open(entry)


def cache_key(spec: DatasetSpec, *, path: str | None, tokenizer: str) -> dict:
    """Everything that determines the token arrays: dataset, revision, path fingerprint, tokenizer, split rule."""
    from haares.data.offline import fingerprint_files, offline_files
    from haares.data.sources import path_fingerprint

    if spec.kind == "offline":
        if path is not None:
            raise HaaresError(f"{spec.name} reads an installed corpus and takes no --path; drop --path")
        content = fingerprint_files(offline_files(spec.name))
    else:
        content = path_fingerprint(path)
    split = asdict(spec)
    split.pop("note")
    return {
        "version": CACHE_VERSION,
        "spec": split,
        "path": str(Path(path).expanduser().resolve()) if path else None,
        "content": content,
        "tokenizer": tokenizer,
    }


def entry_name(dataset: str, tokenizer: str, key: dict) -> str:
    return f"{dataset}-{tokenizer}-{_sha(key)[:16]}"


# --- build -------------------------------------------------------------------------------------


def _build(spec: DatasetSpec, data: DataConfig, *, key: dict, entry: Path, progress: bool, workers: int) -> None:
    from haares.data.sources import load_corpus

    tmp = entry.parent / f".{entry.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    _log(entry, "start")
    started = time.time()
    try:
        corpus = load_corpus(spec, path=data.path, tokenizer=data.tokenizer, progress=progress)
        tmp.mkdir()
        with _Progress(progress) as bar:
            tokenizer = _train_tokenizer(corpus, data.tokenizer, bar=bar, workers=workers)
            tokenizer.save(tmp / TOKENIZER_FILES[data.tokenizer])
            counts = {}
            for split, docs in (("train", corpus.train), ("val", corpus.validation)):
                counts[split], n_chars = _write_split(tmp / f"{split}.bin", docs, corpus.joiner, tokenizer, bar=bar, label=split, workers=workers)
                if n_chars == 0:
                    raise HaaresError(f"the {split} split of {spec.name} has no text; check the data (or --path)")
        meta = {
            "key": key,
            "source": corpus.source,
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "train_docs": corpus.train.n_docs,
            "val_docs": corpus.validation.n_docs,
            "vocab_size": tokenizer.vocab_size,
            "tokenizer_sha256": _file_sha(tmp / TOKENIZER_FILES[data.tokenizer]),
            "build_seconds": round(time.time() - started, 3),
        }
        _write_synced(tmp / "meta.json", json.dumps(meta, indent=1, sort_keys=True).encode())
        fsync_dir(tmp)
        os.rename(tmp, entry)
        fsync_dir(entry.parent)
        _log(entry, "done")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _log(entry, "failed")
        raise


def _train_tokenizer(corpus: Corpus, kind: str, *, bar: _Progress, workers: int) -> Any:
    if kind == "char":
        total = np.zeros(MAX_CODE_POINT, dtype=np.int64)
        task = bar.add("count chars (train)", corpus.train.n_docs)
        chunks = chunk_docs(corpus.train.batches(), joiner=corpus.joiner)
        for (n_docs, _), counts in parallel_map(count_chunk, chunks, workers=workers):
            total += counts
            bar.advance(task, n_docs)
        return CharTokenizer.train(total)
    task = bar.add("train BPE-4096 (first 100M bytes)", None)
    tok = BpeTokenizer.train(_docs_with_joiner(corpus.train, corpus.joiner))
    bar.finish(task)
    return tok


def _docs_with_joiner(split: DocSplit, joiner: str):  # noqa: ANN202 - generator of str
    for batch in split.batches():
        for doc in batch:
            yield doc + joiner


def _write_split(path: Path, docs: DocSplit, joiner: str, tokenizer: Any, *, bar: _Progress, label: str, workers: int) -> int:
    """Tokenize one split into `path` (raw uint16); returns (tokens, document characters)."""
    task = bar.add(f"tokenize {label}", docs.n_docs)
    n_tokens = n_chars = 0
    with open(path, "wb") as fh:
        for (n_docs, chunk_chars), ids in _encoded(docs, joiner, tokenizer, workers=workers):
            fh.write(np.ascontiguousarray(ids, dtype=TOKEN_DTYPE).tobytes())
            n_tokens += len(ids)
            n_chars += chunk_chars
            bar.advance(task, n_docs)
        fh.flush()
        os.fsync(fh.fileno())
    return n_tokens, n_chars


def _encoded(docs: DocSplit, joiner: str, tokenizer: Any, *, workers: int):  # noqa: ANN202 - generator
    """((n_docs, n_doc_chars), ids) in document order; each document is followed by `joiner`."""
    if isinstance(tokenizer, CharTokenizer):
        chars = tuple(tokenizer.chars)
        tasks = ((n, (chars, text)) for n, text in chunk_docs(docs.batches(), joiner=joiner))
        yield from parallel_map(encode_chunk, tasks, workers=workers)
        return
    # BPE: encode documents one by one (tokenizers parallelises encode_batch) and the joiner once,
    # so the ids do not depend on how documents were batched.
    joiner_ids = np.asarray(tokenizer.encode(joiner), dtype=TOKEN_DTYPE) if joiner else np.zeros(0, TOKEN_DTYPE)
    for batch in docs.batches(1000):
        parts = []
        for ids in tokenizer.encode_batch(batch):
            parts += [ids, joiner_ids]
        yield (len(batch), sum(map(len, batch))), np.concatenate(parts) if parts else np.zeros(0, TOKEN_DTYPE)


# --- trust and open ----------------------------------------------------------------------------


def _trusted(entry: Path) -> bool:
    """meta.json parses, and the files it describes exist with the sizes it records."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        tok_file = entry / TOKENIZER_FILES[meta["key"]["tokenizer"]]
        item = np.dtype(TOKEN_DTYPE).itemsize
        return (
            meta["key"]["version"] == CACHE_VERSION
            and (entry / "train.bin").stat().st_size == meta["train_tokens"] * item
            and (entry / "val.bin").stat().st_size == meta["val_tokens"] * item
            and _file_sha(tok_file) == meta["tokenizer_sha256"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _open(entry: Path) -> PreparedData:
    meta = json.loads((entry / "meta.json").read_text())
    kind = meta["key"]["tokenizer"]
    tok_path = entry / TOKENIZER_FILES[kind]
    tokenizer = CharTokenizer.load(tok_path) if kind == "char" else BpeTokenizer.load(tok_path)
    fingerprint = _sha({"entry": entry.name, "tokenizer": meta["tokenizer_sha256"], "train": meta["train_tokens"], "val": meta["val_tokens"]})[:16]
    return PreparedData(
        train=np.memmap(entry / "train.bin", dtype=TOKEN_DTYPE, mode="r"),
        val=np.memmap(entry / "val.bin", dtype=TOKEN_DTYPE, mode="r"),
        tokenizer=tokenizer,
        fingerprint=fingerprint,
        cache_dir=entry,
        meta=meta,
    )


def _remove_leftovers(entry: Path) -> None:
    """Under the lock: temp folders of dead builds, and an entry that is not trusted."""
    for stale in entry.parent.glob(f".{entry.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if entry.exists():
        shutil.rmtree(entry)


# --- small helpers -----------------------------------------------------------------------------


def _log(entry: Path, status: str) -> None:
    """One line per build event in builds.log beside the entries (how many builds ran, and how they ended)."""
    with open(entry.parent / BUILD_LOG, "a") as fh:
        fh.write(json.dumps({"entry": entry.name, "status": status, "pid": os.getpid(), "time": time.time()}) + "\n")


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_synced(path: Path, payload: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())



class _Progress:
    """A rich progress bar when enabled; a no-op otherwise."""

    def __init__(self, enabled: bool) -> None:
        self._bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def add(self, label: str, total: int | None) -> int:
        return self._bar.add_task(label, total=total) if self._bar is not None else 0

    def advance(self, task: int, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(task, n)

    def finish(self, task: int) -> None:
        if self._bar is not None:
            self._bar.update(task, total=1, completed=1)
