"""The data layer: dataset registry, corpora, char/BPE tokenizers, the token cache, and batches.

Produces numpy arrays only (no torch); the trainer converts them.
"""

from haares.data.batches import EvalSet, TrainBatches
from haares.data.cache import PreparedData, prepare
from haares.data.registry import DATASETS, DatasetSpec, get_spec

__all__ = ["DATASETS", "DatasetSpec", "EvalSet", "PreparedData", "TrainBatches", "get_spec", "prepare"]
