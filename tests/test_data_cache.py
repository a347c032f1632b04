"""The token cache: two spawned processes asking at once build it once; a crash mid-build, a dead
build's temp folder or a truncated file leave nothing that is trusted later; reloads are identical;
the process pool gives the same tokens as one process."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from fixtures import hub_shaped

from haares.config import DataConfig
from haares.data import cache, prepare
from haares.data.char import CharTokenizer, count_chars
from haares.data.pipeline import chunk_docs, count_chunk, encode_chunk, parallel_map


def _builds(home: Path, status: str = "start") -> list[dict]:
    log = home / "cache" / cache.BUILD_LOG
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [r for r in rows if r["status"] == status]


def _prepare_in_child(repo: str, barrier, results) -> None:  # noqa: ANN001 - multiprocessing objects
    barrier.wait(timeout=60)  # both children call prepare() at the same moment
    p = prepare(DataConfig(dataset="tinystories", path=repo), progress=False)
    results.put((p.fingerprint, str(p.cache_dir), int(len(p.train))))


def test_two_processes_build_once(home, tmp_path):
    repo = hub_shaped.make_tinystories(tmp_path / "ts")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_prepare_in_child, args=(str(repo), barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert got[0] == got[1]
    assert len(_builds(home, "start")) == 1 and len(_builds(home, "done")) == 1
    # A third caller in this process reads the same entry without building.
    again = prepare(DataConfig(dataset="tinystories", path=str(repo)), progress=False)
    assert (again.fingerprint, str(again.cache_dir)) == got[0][:2]
    assert len(_builds(home, "start")) == 1


def test_crash_mid_build_leaves_nothing_trusted(home, tmp_path, monkeypatch):
    repo = hub_shaped.make_tinystories(tmp_path / "ts")
    real_write = cache._write_split

    def crash_on_val(path, *args, **kwargs):  # noqa: ANN001, ANN202
        if path.name == "val.bin":
            path.write_bytes(b"\x01\x00" * 10)  # a partial file, then the crash
            raise RuntimeError("simulated crash")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(cache, "_write_split", crash_on_val)
    cfg = DataConfig(dataset="tinystories", path=str(repo))
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare(cfg, progress=False)
    root = home / "cache"
    assert [p for p in root.iterdir() if p.is_dir()] == []  # no entry, no temp folder
    assert len(_builds(home, "failed")) == 1

    monkeypatch.setattr(cache, "_write_split", real_write)
    p = prepare(cfg, progress=False)
    assert len(_builds(home, "start")) == 2 and len(_builds(home, "done")) == 1
    assert len(p.val) == p.meta["val_tokens"] > 10


def test_dead_build_leftovers_and_truncated_files_are_rebuilt(home, tmp_path):
    repo = hub_shaped.make_tinystories(tmp_path / "ts")
    cfg = DataConfig(dataset="tinystories", path=str(repo))
    good = prepare(cfg, progress=False)
    entry = good.cache_dir
    train = np.array(good.train)
    # A process killed mid-build leaves a temp folder; a disk problem truncates train.bin.
    stale = entry.parent / f".{entry.name}.tmp-999999-deadbeef"
    stale.mkdir()
    (stale / "train.bin").write_bytes(b"\x00" * 8)
    with open(entry / "train.bin", "r+b") as fh:
        fh.truncate(100)
    assert not cache._trusted(entry)
    rebuilt = prepare(cfg, progress=False)
    assert not stale.exists()
    assert np.array_equal(np.array(rebuilt.train), train)
    assert rebuilt.fingerprint == good.fingerprint
    assert len(_builds(home, "start")) == 2
    # An entry without meta.json (renamed but never finished) is not trusted either.
    (entry / "meta.json").unlink()
    assert not cache._trusted(entry)


def test_key_changes_with_tokenizer_and_files(home, tmp_path):
    repo = hub_shaped.make_tinystories(tmp_path / "ts")
    char = prepare(DataConfig(dataset="tinystories", path=str(repo)), progress=False)
    bpe = prepare(DataConfig(dataset="tinystories", path=str(repo), tokenizer="bpe4096"), progress=False)
    assert char.cache_dir != bpe.cache_dir and char.fingerprint != bpe.fingerprint
    assert (bpe.cache_dir / "tokenizer.json").is_file()
    (repo / "data/validation-00000-of-00001-cccc.parquet").unlink()
    hub_shaped._write_parquet(repo / "data/validation-00000-of-00001-cccc.parquet", {"text": ["changed text " * 50]})
    changed = prepare(DataConfig(dataset="tinystories", path=str(repo)), progress=False)
    assert changed.cache_dir != char.cache_dir
    assert char.tokenizer.decode(changed.val).startswith("changed text")


def test_pool_gives_the_same_tokens_as_one_process():
    docs = [hub_shaped.prose_docs(40, max_chars=3000)]
    chunks = list(chunk_docs(docs, joiner="\n\n", chunk_chars=5000))
    assert len(chunks) > 4
    serial = sum(count_chunk(text) for _, text in chunks)
    pooled = sum(c for _, c in parallel_map(count_chunk, iter(chunks), workers=2, min_items=1))
    assert np.array_equal(serial, pooled)
    tok = CharTokenizer.train(serial)
    tasks = [(meta, (tuple(tok.chars), text)) for meta, text in chunks]
    out = list(parallel_map(encode_chunk, iter(tasks), workers=2, min_items=1))
    assert [m for m, _ in out] == [m for m, _ in chunks]  # input order kept
    assert np.array_equal(np.concatenate([ids for _, ids in out]), tok.encode_array("".join(d + "\n\n" for d in docs[0])))
    assert count_chars("ab").sum() == 2
