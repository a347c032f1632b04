"""Load a dataset's text through `datasets.load_dataset`: by hub name or from a local path shaped like it.

Owns the split rules (shards, own splits, 95/5 seeded document split), the CodeSearchNet fallbacks,
the offline/no-network check, and turning loader failures into one-line HaaresErrors.
`datasets` is imported lazily: a built cache is read without it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from haares.data.corpus import Corpus, DocSplit
from haares.data.offline import load_offline
from haares.data.registry import DatasetSpec
from haares.errors import HaaresError, first_line

DOC_SPLIT_SEED = 42
DOC_SPLIT_VAL_FRACTION = 0.05
HUB_PROBE_TIMEOUT_S = 3.0
SINGLE_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".gz": "json", ".txt": "text"}
# Raw CodeSearchNet jsonl keys -> the column names of the hub dataset (the old loading script's mapping).
CSN_RENAME = {
    "repo": "repository_name", "path": "func_path_in_repository", "original_string": "whole_func_string",
    "code": "func_code_string", "code_tokens": "func_code_tokens", "docstring": "func_documentation_string",
    "docstring_tokens": "func_documentation_tokens", "partition": "split_name", "url": "func_code_url",
}  # fmt: skip


def load_corpus(spec: DatasetSpec, *, path: str | None, tokenizer: str, progress: bool = True) -> Corpus:
    """Train and validation documents of `spec`, from the hub or from `path`.

    tokenizer: "char" or "bpe4096"; with BPE, datasets marked `bpe_doc_split` (OpenWebText) use a
    95/5 split of their documents by a seeded shuffle instead of their char split.
    """
    if spec.kind == "offline":
        if path is not None:
            raise HaaresError(f"{spec.name} reads an installed corpus and takes no --path; drop --path")
        return load_offline(spec.name)
    _set_progress(progress)
    joiner = spec.joiner
    try:
        if path is None:
            train, val, source = _load_hub(spec)
        else:
            train, val, source, joiner = _load_local(spec, Path(path).expanduser())
    except HaaresError:
        raise
    except Exception as exc:  # noqa: BLE001 - every loader failure becomes one line
        raise _as_user_error(exc, spec=spec, path=path) from None
    if tokenizer == "bpe4096" and spec.bpe_doc_split and val is not None:
        val, train = _concat([train, val]), None  # pool, then re-split below
        train, val = doc_split(val)
        source += "; BPE 95/5 document split (seed 42)"
    if val is None:
        train, val = doc_split(train)
        source += "; 95/5 document split (seed 42)"
    return Corpus(
        train=DocSplit(dataset=train, column=spec.text_column),
        validation=DocSplit(dataset=val, column=spec.text_column),
        joiner=joiner,
        source=source,
    )


def doc_split(dataset: Any) -> tuple[Any, Any]:
    """95/5 split of a Dataset's rows by a seeded shuffle (seed 42); each part keeps the original order."""
    n = len(dataset)
    if n < 2:
        raise HaaresError(f"need at least 2 documents to carve a validation split, found {n}")
    perm = np.random.default_rng(DOC_SPLIT_SEED).permutation(n)
    n_val = max(1, round(n * DOC_SPLIT_VAL_FRACTION))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return dataset.select(train_idx), dataset.select(val_idx)


def path_fingerprint(path: str | None) -> str | None:
    """sha256 over (relative name, size, mtime) of every file under `path`; None for hub loads.

    Cheap on GB-sized folders; any edit, addition or removal of a file changes it.
    """
    if path is None:
        return None
    root = Path(path).expanduser()
    if not root.exists():
        raise HaaresError(f"--path {path} does not exist; pass a local file or a folder shaped like the hub repo")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts)
    digest = hashlib.sha256(str(root.resolve()).encode())
    for f in files:
        st = f.stat()
        digest.update(f"{f.relative_to(root) if f != root else f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# --- hub ---------------------------------------------------------------------------------------


def _load_hub(spec: DatasetSpec) -> tuple[Any, Any, str]:
    _require_hub()
    if spec.name == "codesearchnet_python":
        ds = _load_codesearchnet_hub(spec)
        return ds[spec.train_split], ds[spec.validation_split], f"{spec.hub_id} ({spec.config})"
    source = f"{spec.hub_id} ({spec.config}) @ {spec.revision or 'latest'}"
    if spec.shard_split is not None:
        return *_load_shards(spec.hub_id, spec, revision=spec.revision), source
    return (
        _load(spec.hub_id, spec.config, split=spec.train_split, revision=spec.revision),
        _load(spec.hub_id, spec.config, split=spec.validation_split, revision=spec.revision),
        source,
    )


def _require_hub() -> None:
    """Fail in seconds when the hub cannot be reached, instead of datasets' ~23 s of retries.

    With the offline flag set, datasets fails at once by itself unless the data is in its cache.
    """
    import huggingface_hub.constants as hub_constants

    if hub_constants.HF_HUB_OFFLINE:
        return
    host = urlparse(hub_constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        raise HaaresError(_offline_message(f"cannot reach {host}; HF_HUB_OFFLINE=1 uses a copy already cached")) from None


def _load_codesearchnet_hub(spec: DatasetSpec) -> Any:
    """data.md's order: the hub name; its parquet conversion; then the original zip + the json loader."""
    try:
        return _load(spec.hub_id, spec.config, revision=spec.revision)
    except RuntimeError as exc:  # "Dataset scripts are no longer supported" (main is script-based)
        if "script" not in str(exc).lower():
            raise
    try:
        return _load(spec.hub_id, spec.config, revision="refs/convert/parquet")
    except (FileNotFoundError, ValueError, RuntimeError):
        pass
    from huggingface_hub import hf_hub_download

    from haares.settings import data_cache_dir

    archive = hf_hub_download(spec.hub_id, "data/python.zip", repo_type="dataset", revision=spec.revision)
    target = data_cache_dir() / "downloads" / "codesearchnet_python"
    if not (target / "python").is_dir():
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        tmp.replace(target)
    return _load_codesearchnet_jsonl(target)


def _load_codesearchnet_jsonl(root: Path) -> Any:
    """The original `python/final/jsonl/{train,valid,test}/*.jsonl[.gz]` with hub column names."""
    import datasets

    base = next((p for p in (root / "python/final/jsonl", root / "final/jsonl", root) if (p / "train").is_dir()), None)
    if base is None:
        raise HaaresError(f"{root} has no python/final/jsonl/train folder (CodeSearchNet jsonl layout)")
    files = {}
    for split, folder in (("train", "train"), ("validation", "valid")):
        found = sorted(str(p) for p in (base / folder).glob("*.jsonl*"))
        if not found:
            raise HaaresError(f"no *.jsonl files in {base / folder}")
        files[split] = found
    ds = datasets.load_dataset("json", data_files=files, download_mode="force_redownload", verification_mode="no_checks")
    present = set(ds["train"].column_names)
    return ds.rename_columns({k: v for k, v in CSN_RENAME.items() if k in present and v not in present})


# --- local -------------------------------------------------------------------------------------


def _load_local(spec: DatasetSpec, root: Path) -> tuple[Any, Any, str, str]:
    """(train, validation or None, source, joiner) from a local folder or file."""
    if not root.exists():
        raise HaaresError(f"--path {root} does not exist; pass a local file or a folder shaped like the hub repo")
    if root.is_file():
        return *_load_single_file(spec, root), f"{spec.name} from file {root}", ("\n\n" if root.suffix == ".txt" else spec.joiner)
    source = f"{spec.name} from folder {root}"
    has_hub_layout = (root / "README.md").is_file() or any(root.rglob("*.parquet"))
    if spec.name == "codesearchnet_python" and not has_hub_layout:
        ds = _load_codesearchnet_jsonl(root)
        return ds["train"], ds["validation"], source + " (jsonl)", spec.joiner
    if not has_hub_layout:
        raise HaaresError(f"{root} has neither README.md with configs nor parquet files; see docs/data.md")
    if spec.shard_split is not None:
        missing = [f for f in spec.shard_split.files("train") + spec.shard_split.files("validation") if not (root / f).is_file()]
        if missing:
            raise HaaresError(f"{root} lacks {len(missing)} shard(s) of the split rule, e.g. {missing[0]}")
        return *_load_shards(str(root), spec, revision=None), source, spec.joiner
    return (
        _load(str(root), spec.config, split=spec.train_split),
        _load(str(root), spec.config, split=spec.validation_split),
        source,
        spec.joiner,
    )


def _load_single_file(spec: DatasetSpec, file: Path) -> tuple[Any, None]:
    """One file is one split of documents; validation is carved from it by the caller."""
    suffix = ".gz" if file.name.endswith((".jsonl.gz", ".json.gz")) else file.suffix
    builder = SINGLE_FILE_BUILDERS.get(suffix)
    if builder is None:
        raise HaaresError(f"--path {file}: unsupported file type; use .txt, .parquet, .jsonl or a hub-shaped folder")
    kwargs = {"sample_by": "paragraph"} if builder == "text" else {}
    ds = _load(builder, None, data_files=str(file), split="train", **kwargs)
    if builder == "text":
        return ds, None
    column = spec.text_column
    if column not in ds.column_names:
        raise HaaresError(f"{file} has no column {column!r} (columns: {', '.join(ds.column_names)})")
    return ds, None


# --- shared helpers ----------------------------------------------------------------------------


def _load_shards(repo: str, spec: DatasetSpec, *, revision: str | None) -> tuple[Any, Any]:
    """Train and validation from explicit shard files (relative to the repo root)."""
    rule = spec.shard_split
    assert rule is not None
    files = {"train": rule.files("train"), "validation": rule.files("validation")}
    train = _load(repo, spec.config, data_files=files, split="train", revision=revision)
    val = _load(repo, spec.config, data_files=files, split="validation", revision=revision)
    return train, val


def _load(repo: str, config: str | None, **kwargs: Any) -> Any:
    """datasets.load_dataset; local data is always re-read.

    datasets keys its Arrow cache of a local folder by the folder's name, not its full path or
    contents (checked with 5.2.0), so two folders named alike, or an edited file, would return stale
    rows. Our cache key already tracks the files; re-reading costs one pass, once per build.
    """
    import datasets

    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if Path(repo).exists() or kwargs.get("data_files") and config is None:
        kwargs["download_mode"] = "force_redownload"
        kwargs["verification_mode"] = "no_checks"  # else sizes recorded for the old files are "expected"
    return datasets.load_dataset(repo, config, **kwargs)


def _concat(parts: list[Any]) -> Any:
    import datasets

    return datasets.concatenate_datasets(parts)


def _set_progress(progress: bool) -> None:
    import datasets

    if progress:
        datasets.enable_progress_bars()
    else:
        datasets.disable_progress_bars()


def _offline_message(why: str) -> str:
    return (
        f"the Hugging Face hub is not available ({why}); use --path with local files shaped like the "
        "hub repo, or the offline corpora offline_english / offline_code"
    )


def _as_user_error(exc: BaseException, *, spec: DatasetSpec, path: str | None) -> HaaresError:
    """One line for a loader failure: offline, missing data, undecodable text, or the loader's own message."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for err in chain:
        if isinstance(err, UnicodeDecodeError):
            where = path or spec.hub_id
            return HaaresError(f"{where} holds bytes that are not valid UTF-8 ({err.reason}); fix or remove them")
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain)
    if path is None and (names & {"ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError"} or "offline" in text.lower()):
        return HaaresError(_offline_message(f"{spec.hub_id} is not cached and offline mode is on"))
    if names & {"FileNotFoundError", "DatasetNotFoundError", "EmptyDatasetError", "DataFilesNotFoundError"}:
        return HaaresError(f"{path or spec.hub_id}: no data found for {spec.name} ({first_line(exc)})")
    return HaaresError(f"loading {spec.name} from {path or spec.hub_id} failed: {first_line(exc)}")
