"""Preference data: read rows, normalize them to pairs, tokenize, truncate and cache them.

Batching lives in `relupo.data.batching`.
"""

from relupo.data.formats import PreferencePair, render_messages
from relupo.data.loading import DataReport, LoadedData, SourceReport, load_pairs, read_pairs
from relupo.data.tokenize import TokenizedData, TokenizeReport, cache_path, load_or_tokenize, tokenize_pairs

__all__ = [
    "DataReport",
    "LoadedData",
    "PreferencePair",
    "SourceReport",
    "TokenizeReport",
    "TokenizedData",
    "cache_path",
    "load_or_tokenize",
    "load_pairs",
    "read_pairs",
    "render_messages",
    "tokenize_pairs",
]
