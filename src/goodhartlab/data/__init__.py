"""Preference data: schema, JSONL / Parquet / HF-dataset I/O, sampling and gold labelling."""

from goodhartlab.data.io import pair_from_row, pairs_from_dataset, read_pairs, write_pairs
from goodhartlab.data.labeling import flip_rate, label_with_gold, sample_pairs
from goodhartlab.data.schema import CompletionPair, PreferencePair

__all__ = [
    "CompletionPair",
    "PreferencePair",
    "flip_rate",
    "label_with_gold",
    "pair_from_row",
    "pairs_from_dataset",
    "read_pairs",
    "sample_pairs",
    "write_pairs",
]
