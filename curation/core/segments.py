"""Word segments of a batch of texts from one split of the texts joined by newlines.

UAX #29 puts a word boundary on both sides of every line break and lets nothing attach across one,
so each text splits as it would alone; counting the line breaks before a segment says whose it
is. Segments are dictionary-encoded, so callers look at each distinct one once."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def split_joined(texts: list[str], split: Callable[[str], list[str]]) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(distinct segments, each segment's index into them in order, line breaks before each segment,
    the joins counted: text ``k``'s first line is ``sum(t.count("\\n") + 1 for t in texts[:k])``)."""
    encoded = pc.dictionary_encode(pa.array(split("\n".join(texts)), pa.large_string()))
    newlines = pc.count_substring(encoded.dictionary, "\n").to_numpy(zero_copy_only=False).astype(np.int64)
    ids = encoded.indices.to_numpy(zero_copy_only=False)
    return encoded.dictionary, ids, np.cumsum(newlines[ids]) - newlines[ids]
