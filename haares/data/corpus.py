"""Documents of one split, however they were loaded: a plain list or a `datasets.Dataset` column.

The cache builder only iterates batches of strings from here, so offline corpora never import
`datasets` (the GPU machine has none).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class DocSplit:
    """The documents (str) of one split, iterated in a fixed order in batches.

    Holds either `docs` (a list of str) or `dataset` + `column` (a `datasets.Dataset`).
    """

    docs: list[str] | None = None
    dataset: Any = None
    column: str = "text"

    @property
    def n_docs(self) -> int:
        return len(self.docs) if self.docs is not None else len(self.dataset)

    def batches(self, size: int = 1000) -> Iterator[list[str]]:
        """Successive lists of at most `size` documents, in order."""
        if self.docs is not None:
            for start in range(0, len(self.docs), size):
                yield self.docs[start : start + size]
            return
        for batch in self.dataset.iter(batch_size=size):
            # None cells (missing text) count as empty documents.
            yield [text or "" for text in batch[self.column]]


@dataclass
class Corpus:
    """Train and validation documents plus what identifies them.

    joiner: text between consecutive documents (and after the last one).
    source: a short human description, stored in the cache's meta.json.
    """

    train: DocSplit
    validation: DocSplit
    joiner: str
    source: str
